/**
 * The last line of defence against credentials in the audit trail. Every sink encodes
 * records through {@link sanitizeRecord}, so even a caller that copies an error message
 * holding a token, or spreads request headers into a record, cannot write a secret.
 *
 * What counts as a secret (docs/audit.md, "Secrets"):
 * - a JWT: a base64url segment starting `eyJ` (the encoding of `{"`) followed by two more
 *   dot-separated segments (JWS compact form; JWE's five segments match too);
 * - any three dot-separated base64url segments of 16 characters or more each (opaque
 *   tokens shaped like JWTs); DNS names rarely have three such long labels in a row;
 * - `Bearer xxx` / `Basic xxx` credentials and `authorization: …` / `cookie: …` header
 *   text;
 * - any field whose *name* says it holds a secret (`token`, `authorization`, `password`,
 *   `secret`, `cookie`, `credential`, `apiKey`, `privateKey`): dropped entirely.
 *
 * Secret text is replaced by `[REDACTED]`, and the record lists the paths it touched in
 * `redacted`, so an operator sees that something was removed but never what. A client's
 * free text (`userAgent`) is then bounded: control characters escaped, cut to
 * {@link MAX_RECORDED_USER_AGENT} characters (after the redaction, which a cut token could
 * escape).
 *
 * @module
 */
import type { AuditRecord } from '../../protocol/audit-record.js'
import { plainText } from '../../shared/text.js'

/** What replaces a secret. */
export const REDACTED = '[REDACTED]'

const SECRET_KEY =
  /token|authori[sz]ation|passw(?:or)?d|secret|cookie|credential|api[-_]?key|private[-_]?key/i

/**
 * The credential shapes, each with what replaces a match. `(?!\[REDACTED\])` keeps a
 * second pass from matching the first pass's output, so sanitizing is idempotent.
 */
const PATTERNS: readonly { source: string; flags: string; by: string }[] = [
  {
    // `authorization: Bearer xyz`, `cookie=abc`, `Proxy-Authorization: "…"`
    source: String.raw`\b((?:proxy-)?authorization|(?:set-)?cookie)(\s*[:=]\s*)(?!\[REDACTED\])("[^"]*"|'[^']*'|[^\s,;]+(?:[ \t]+[^\s,;]+)?)`,
    flags: 'i',
    by: `$1$2${REDACTED}`,
  },
  {
    // RFC 6750 b64token after "Bearer"
    source: String.raw`\b([Bb]earer|BEARER)(\s+)(?!\[REDACTED\])[\w.~+/-]{8,}=*`,
    flags: '',
    by: `$1$2${REDACTED}`,
  },
  {
    // base64 user:password after "Basic" (not plain words: needs a digit, +, /, = or a
    // capital after the first character)
    source: String.raw`\b([Bb]asic|BASIC)(\s+)(?=.[A-Za-z0-9+/]*[0-9A-Z+/=])[A-Za-z0-9+/]{8,}={0,2}`,
    flags: '',
    by: `$1$2${REDACTED}`,
  },
  {
    // JWS (3 segments) or JWE (5 segments); `eyJ` is base64url for `{"`
    source: String.raw`(?<![\w-])eyJ[\w-]{8,}\.[\w-]{2,}\.[\w-]*(?:\.[\w-]*){0,2}`,
    flags: '',
    by: REDACTED,
  },
  {
    // opaque three-segment tokens
    source: String.raw`(?<![\w-])[\w-]{16,}\.[\w-]{16,}\.[\w-]{16,}(?:\.[\w-]+){0,2}`,
    flags: '',
    by: REDACTED,
  },
]

const REPLACERS: readonly [RegExp, string][] = PATTERNS.map((p) => [
  new RegExp(p.source, `${p.flags}g`),
  p.by,
])

/** One pass over the string that finds whether any pattern matches (most strings: no). */
const SECRET_TEST = new RegExp(
  PATTERNS.map((p) => (p.flags === 'i' ? toCaseless(p.source) : `(?:${p.source})`)).join('|'),
)

/** The words the first three patterns need: a cheap literal search. */
const WORD_TEST = /bearer|basic|authori[sz]ation|cookie/i

/** The token patterns (JWT, three segments): they need two dots. */
const TOKEN_TEST = new RegExp(
  PATTERNS.slice(3)
    .map((p) => `(?:${p.source})`)
    .join('|'),
)

/**
 * Same answer as `SECRET_TEST.test(text)`, faster for the strings records are made of
 * (names, addresses, times): the full pattern runs only when a cheap test allows a match.
 */
function suspicious(text: string): boolean {
  const dot = text.indexOf('.')
  if (dot !== -1 && text.indexOf('.', dot + 1) !== -1 && TOKEN_TEST.test(text)) return true
  return WORD_TEST.test(text) && SECRET_TEST.test(text)
}

/** Makes a source case-insensitive without the `i` flag (only letters in our patterns). */
function toCaseless(source: string): string {
  let out = ''
  let inClass = false
  for (let i = 0; i < source.length; i++) {
    const ch = source[i]!
    if (ch === '\\') {
      out += ch + (source[i + 1] ?? '')
      i++
      continue
    }
    if (ch === '[') inClass = true
    else if (ch === ']') inClass = false
    const lower = ch.toLowerCase()
    const upper = ch.toUpperCase()
    out += !inClass && lower !== upper ? `[${lower}${upper}]` : ch
  }
  return `(?:${out})`
}

/** The fields of a record that identify its stream (record.ts copies them from open to close). */
export const STREAM_IDENTITY_KEYS = [
  'gateway',
  'user',
  'groups',
  'authSource',
  'sourceAddress',
  'protocol',
  'userAgent',
  'sessionId',
  'streamId',
  'node',
  'namespace',
  'pod',
  'podUid',
  'port',
] as const satisfies readonly (keyof AuditRecord)[]

/** The record's own field names (never secret names: the key test is skipped for them). */
const KNOWN_KEYS: ReadonlySet<string> = new Set([
  'schema',
  'id',
  'time',
  'type',
  ...STREAM_IDENTITY_KEYS,
  'transport',
  'datagramsClientToPod',
  'datagramsPodToClient',
  'datagramsDropped',
  'agent',
  'datagramsWrongSource',
  'bytesClientToPod',
  'bytesPodToClient',
  'durationMs',
  'endedBy',
  'endedByUser',
  'reason',
  'error',
  'code',
  'message',
  'status',
  'ref',
  'users',
  'method',
  'path',
  'count',
  'firstTime',
  'lastTime',
  'reasons',
])

/** Strings longer than this are cut before the check (bounds the regex cost). */
const MAX_STRING = 16 * 1024

/** The longest user agent a record holds (characters; longer ones are cut, with a mark). */
export const MAX_RECORDED_USER_AGENT = 256

/** True when `text` contains something that looks like a credential. */
export function looksLikeSecret(text: string): boolean {
  return suspicious(text)
}

/** Replaces every credential-looking part of `text` with `[REDACTED]`. */
export function redactText(text: string): string {
  let out = text.length > MAX_STRING ? `${text.slice(0, MAX_STRING)}…` : text
  if (!suspicious(out)) return out
  for (const [re, by] of REPLACERS) out = out.replace(re, by)
  return out
}

/**
 * Text from a request (a name that failed validation, a user agent, a message quoting
 * one) as a record or a log line may hold it: credentials replaced first (a token cut in
 * half would no longer look like one), then control characters escaped and the whole cut
 * to `max` characters. `redacted`: a credential was replaced.
 */
export function untrustedText(text: string, max: number): { text: string; redacted: boolean } {
  const r = redactText(text)
  return { text: plainText(r, max), redacted: r.includes(REDACTED) && !text.includes(REDACTED) }
}

/** {@link untrustedText} for a log field. */
export function logText(text: string, max = 256): string {
  return untrustedText(text, max).text
}

/** The result of {@link sanitizeRecord}. */
export interface SanitizeResult {
  /** The record to write: the input itself when it was clean, else a cleaned copy. */
  record: AuditRecord
  /** Paths that were redacted or dropped (empty when the record was clean). */
  redacted: string[]
}

/**
 * Returns `record` with every credential removed (see the module comment). A clean
 * record is returned as is (no copy), so the common case costs a few regex tests.
 */
export function sanitizeRecord(record: AuditRecord): SanitizeResult {
  const paths: string[] = []
  const cleaned = clean(record, '', paths) as AuditRecord
  // Clean as it was, or only bounded (no credential): no `redacted` to add.
  if (paths.length === 0) return { record: cleaned, redacted: paths }
  const previous = Array.isArray(record.redacted) ? record.redacted : []
  cleaned.redacted = [...new Set([...previous.filter((p) => typeof p === 'string'), ...paths])]
  return { record: cleaned, redacted: paths }
}

/** `error` + `message` → `error.message`; `groups` + 1 → `groups[1]`. */
function join(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`
  return parent === '' ? key : `${parent}.${key}`
}

/** The redacted string, or undefined when `text` is clean (the common case: no copy). */
function cleanString(text: string): string | undefined {
  if (text.length <= MAX_STRING && !suspicious(text)) return undefined
  const out = redactText(text)
  return out === text ? undefined : out
}

/**
 * Walks an object or array; returns it as is when clean, else a cleaned copy. Paths are
 * built only for what gets redacted, so a clean record costs no allocation here.
 */
function clean(value: object, path: string, paths: string[]): object {
  if (Array.isArray(value)) {
    const arr = value as unknown[]
    let copy: unknown[] | undefined
    for (let i = 0; i < arr.length; i++) {
      const v = arr[i]
      let c: unknown = v
      if (typeof v === 'string') {
        const r = cleanString(v)
        if (r !== undefined) {
          c = r
          paths.push(join(path, i))
        }
      } else if (typeof v === 'object' && v !== null) {
        c = clean(v, join(path, i), paths)
      }
      if (c !== v) {
        copy ??= arr.slice()
        copy[i] = c
      }
    }
    return copy ?? arr
  }
  let copy: Record<string, unknown> | undefined
  const obj = value as Record<string, unknown>
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue
    if (path === '' && key === 'redacted') continue
    if (!KNOWN_KEYS.has(key) && SECRET_KEY.test(key)) {
      copy ??= { ...obj }
      delete copy[key]
      paths.push(join(path, key))
      continue
    }
    const v = obj[key]
    let c: unknown = v
    if (typeof v === 'string') {
      const r = cleanString(v)
      if (r !== undefined) {
        c = r
        paths.push(join(path, key))
      }
      // A client's free text: after redaction, controls escaped and cut (docs/audit.md).
      if (key === 'userAgent' && path === '') c = plainText(c as string, MAX_RECORDED_USER_AGENT)
    } else if (typeof v === 'object' && v !== null) {
      c = clean(v, join(path, key), paths)
    }
    if (c !== v) {
      copy ??= { ...obj }
      copy[key] = c
    }
  }
  return copy ?? value
}
