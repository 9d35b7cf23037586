/**
 * `pfgate audit`: query the file audit trail, or follow it live.
 *
 *   pfgate audit query  [--file PATH] [filters] [-o table|json]
 *   pfgate audit follow [--file PATH] [filters] [-o table|json]
 *
 * Reads `audit.log` and its rotated files (`audit.log.N` … `audit.log.1`) oldest first,
 * skipping an unterminated last line (a write in progress, or a crash) and lines that are
 * not records. `follow` polls the live file and follows it across rotation. Exit codes:
 * 0 ok, 1 no such file or bad input, 2 usage. docs/audit.md describes every option.
 *
 * The reading loop is a small copy of src/gateway/audit/trail-reader.ts: components do
 * not import each other; the format itself comes from src/protocol/audit-record.ts.
 *
 * @module
 */
import { createReadStream, existsSync } from 'node:fs'
import { open, readdir, stat } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { once } from 'node:events'
import type { Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import type { AuditRecord } from '../protocol/audit-record.js'
import {
  AuditLineDecoder,
  deniedTrailPath,
  mergeByTime,
  orderTrailFiles,
} from '../protocol/audit-record.js'
import { AUDIT_FILTERS, AuditQueryError, parseAuditQuery } from '../protocol/audit-query.js'
import type { AuditQuery, AuditQueryInput } from '../protocol/audit-query.js'
import { errorCode } from '../shared/errors.js'
import { plainText } from '../shared/text.js'

/** Where a production gateway's trail is by convention (config/gateway.yaml). */
export const DEFAULT_AUDIT_FILE = '/var/log/pfgate/audit.log'
/** The dev cluster's trail (`pfgate dev`), used when present in the working directory. */
export const DEV_AUDIT_FILE = '.pfgate/audit/audit.log'

/** The trail to read: `--file`, else `$PFGATE_AUDIT_FILE`, else the dev trail if present, else the default. */
export function defaultAuditFile(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.PFGATE_AUDIT_FILE
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv
  return existsSync(DEV_AUDIT_FILE) ? DEV_AUDIT_FILE : DEFAULT_AUDIT_FILE
}

/** How often `follow` looks for new records. */
export const DEFAULT_FOLLOW_POLL_MS = 250

/** Streams and hooks for {@link runAuditCommand}. */
export interface AuditCommandIO {
  stdout: Writable
  stderr: Writable
  /** Ends `follow` (exit 0). Without it, `follow` runs until the process is killed. */
  signal?: AbortSignal
  /** The clock for `--since 15m` (tests). */
  now?: () => Date
  /** `follow`'s poll period; default 250 ms. */
  pollMs?: number
}

const USAGE = `Usage:
  pfgate audit query  [--file PATH] [filters] [-o table|json]
  pfgate audit follow [--file PATH] [filters] [-o table|json]

Filters (all given must match; a comma-separated list matches any of its values):
  --user U              the user
  -n, --namespace NS    the pod's namespace
  --pod P               the pod
  --port N              the pod port
  --type T              record type (stream.closed …) or its prefix (stream, session)
  --outcome O           ok, denied, failed, error, limit, admin, restart
  --session ID          the client session id
  --stream ID           the stream id
  --gateway ID          the gateway instance that wrote the record
  --since TIME|DUR      at or after TIME (RFC 3339) or DUR ago (30s, 15m, 2h, 7d)
  --until TIME|DUR      before TIME or DUR ago

Options:
  -f, --file PATH       the trail (default $PFGATE_AUDIT_FILE, else ${DEV_AUDIT_FILE} when
                        present, else ${DEFAULT_AUDIT_FILE}); PATH.N rotated files too;
                        query: repeat it to merge several replicas' trails by time
  -o, --output FORMAT   table (default) or json (one record per line, as stored)
  -h, --help            this help

query prints the matching records oldest first; follow prints new ones as they are
written (with --since, the matching history first) until interrupted.
`

const OPTIONS = {
  file: { type: 'string', short: 'f', multiple: true },
  gateway: { type: 'string' },
  user: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  pod: { type: 'string' },
  port: { type: 'string' },
  type: { type: 'string' },
  outcome: { type: 'string' },
  session: { type: 'string' },
  stream: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} as const

/** A bad value in an option (exit 1, not a usage error). */
class InputError extends Error {}

type Filter = (r: AuditRecord) => boolean

interface Parsed {
  command: 'query' | 'follow'
  /** The first trail (follow reads only this one). */
  file: string
  /** Every trail given (`--file` repeated: several replicas' trails, merged by time). */
  files: string[]
  output: 'table' | 'json'
  filter: Filter
  since: number | undefined
}

/** Runs `pfgate audit …` (argv: the words after `audit`); resolves to the exit code. */
export async function runAuditCommand(argv: string[], io: AuditCommandIO): Promise<number> {
  let parsed: Parsed
  try {
    const p = parse(argv, io)
    if (p === 'help') {
      io.stdout.write(USAGE)
      return 0
    }
    parsed = p
  } catch (err) {
    if (err instanceof InputError) {
      io.stderr.write(`pfgate audit: ${err.message}\n`)
      return 1
    }
    io.stderr.write(`pfgate audit: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  const out = new Output(io.stdout, parsed.output)
  try {
    if (parsed.command === 'query') return await query(parsed, io, out)
    return await follow(parsed, io, out)
  } catch (err) {
    const code = errorCode(err)
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'ENOTDIR') {
      io.stderr.write(`pfgate audit: cannot read ${parsed.file}: ${(err as Error).message}\n`)
      return 1
    }
    if (code === 'EPIPE') return 0
    throw err
  }
}

function parse(argv: string[], io: AuditCommandIO): Parsed | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    options: OPTIONS,
    allowPositionals: true,
    strict: true,
  })
  if (values.help === true) return 'help'
  const [command, ...extra] = positionals
  if (command === undefined) throw new Error('missing subcommand: query or follow')
  if (command !== 'query' && command !== 'follow')
    throw new Error(`unknown subcommand ${JSON.stringify(command)}: use query or follow`)
  if (extra.length > 0) throw new Error(`unexpected argument ${JSON.stringify(extra[0])}`)
  const output = values.output ?? 'table'
  if (output !== 'table' && output !== 'json')
    throw new InputError(`--output must be table or json, not ${JSON.stringify(output)}`)
  const now = (io.now ?? (() => new Date()))().getTime()
  const input: AuditQueryInput = {}
  for (const name of AUDIT_FILTERS) {
    const v = values[name]
    if (v !== undefined) input[name] = v
  }
  let q: AuditQuery
  try {
    q = parseAuditQuery(input, now, (n) => `--${n}`)
  } catch (err) {
    if (err instanceof AuditQueryError) throw new InputError(err.message)
    throw err
  }
  const files = values.file ?? [defaultAuditFile()]
  if (command === 'follow' && files.length > 1)
    throw new InputError('follow reads one trail: give --file once')
  return {
    command,
    file: files[0] as string,
    files,
    output,
    filter: q.matches,
    since: q.since,
  }
}

// --- query -------------------------------------------------------------------------

async function trailFiles(path: string): Promise<string[]> {
  const names = await readdir(dirname(path))
  return orderTrailFiles(basename(path), names).map((n) => join(dirname(path), n))
}

/** What reading a trail skipped (reported on stderr). */
interface Skipped {
  malformed: number
  partial: string[]
}

/** The records of one trail's files (oldest file first), in the order written. */
async function* trailRecords(path: string, skipped: Skipped): AsyncGenerator<AuditRecord> {
  for (const file of await trailFiles(path)) {
    const decoder = new AuditLineDecoder()
    try {
      for await (const chunk of createReadStream(file, { highWaterMark: 256 * 1024 })) {
        yield* decoder.push(chunk as Buffer)
      }
    } catch (err) {
      if (errorCode(err) === 'ENOENT') continue // rotated away meanwhile
      throw err
    }
    if (decoder.end() > 0) skipped.partial.push(file)
    skipped.malformed += decoder.malformed
  }
}

async function query(p: Parsed, io: AuditCommandIO, out: Output): Promise<number> {
  for (const file of p.files) {
    const denied = deniedTrailPath(file)
    if ((await trailFiles(file)).length === 0 && (await trailFiles(denied)).length === 0) {
      io.stderr.write(`pfgate audit: no such file: ${file}\n`)
      return 1
    }
  }
  const skipped: Skipped = { malformed: 0, partial: [] }
  let matched = 0
  // Each trail and the denials trail beside it, all merged in time order (several
  // replicas' trails: each record names its gateway).
  let merged: AsyncIterable<AuditRecord> | undefined
  for (const file of p.files) {
    const one = mergeByTime(
      trailRecords(file, skipped),
      trailRecords(deniedTrailPath(file), skipped),
    )
    merged = merged === undefined ? one : mergeByTime(merged, one)
  }
  for await (const r of merged as AsyncIterable<AuditRecord>) {
    if (!p.filter(r)) continue
    matched++
    await out.record(r)
  }
  await out.end()
  if (matched === 0 && p.output === 'table') io.stderr.write('No matching records.\n')
  if (skipped.malformed > 0)
    io.stderr.write(`note: skipped ${skipped.malformed} line(s) that are not records\n`)
  for (const f of skipped.partial)
    io.stderr.write(
      `note: ignored an unterminated last line in ${f} (a write in progress, or a crash)\n`,
    )
  return 0
}

// --- follow ------------------------------------------------------------------------

async function follow(p: Parsed, io: AuditCommandIO, out: Output): Promise<number> {
  const pollMs = io.pollMs ?? DEFAULT_FOLLOW_POLL_MS
  const signal = io.signal
  const main = new Tail(p.file, pollMs, signal)
  const denied = new Tail(deniedTrailPath(p.file), pollMs, signal)
  const emit = async (records: AsyncIterable<AuditRecord>): Promise<void> => {
    for await (const r of records) if (p.filter(r)) await out.record(r)
  }
  // The main trail must exist; the denials trail may appear later (an older gateway, or
  // no refusal yet).
  await main.open()
  try {
    await denied.open().catch((err: unknown) => {
      if (errorCode(err) !== 'ENOENT') throw err
    })
    out.streaming = true
    if (p.since !== undefined) {
      // History first (both trails, merged), then what is written from now on.
      await emit(mergeByTime(main.history(), denied.history()))
    } else {
      await main.skipToEnd()
      await denied.skipToEnd()
    }
    while (signal?.aborted !== true) {
      await emit(mergeByTime(main.poll(), denied.poll()))
      if (main.stopped || denied.stopped) return 0 // stopped while waiting for a new file
      await sleep(pollMs, signal)
    }
    await emit(mergeByTime(main.poll(), denied.poll()))
    await out.end()
    return 0
  } finally {
    await main.close()
    await denied.close()
  }
}

/**
 * One trail followed: its live file held open and read as it grows, followed across
 * rotation (the files rotated since the last poll are read first), and, for a trail
 * that does not exist yet, picked up from its start when it appears.
 */
class Tail {
  readonly #path: string
  readonly #pollMs: number
  readonly #signal: AbortSignal | undefined
  #fh: FileHandle | undefined
  #ino = 0
  #pos = 0
  #decoder = new AuditLineDecoder()
  /** Stopped (the signal) while waiting for a rotated trail's new live file. */
  stopped = false

  constructor(path: string, pollMs: number, signal: AbortSignal | undefined) {
    this.#path = path
    this.#pollMs = pollMs
    this.#signal = signal
  }

  /** Opens the live file (rejects with ENOENT when there is none). */
  async open(): Promise<void> {
    const fh = await open(this.#path, 'r')
    this.#fh = fh
    this.#ino = (await fh.stat()).ino
    this.#pos = 0
  }

  /** Starts after what is there now (at the start of an unterminated last line). */
  async skipToEnd(): Promise<void> {
    if (this.#fh !== undefined) this.#pos = await startOfLastLine(this.#fh)
  }

  /** The records already there: the rotated files (not the one held open), then the live file. */
  async *history(): AsyncGenerator<AuditRecord> {
    if (this.#fh === undefined) return
    for (const file of (await trailFiles(this.#path)).slice(0, -1)) {
      const st = await stat(file).catch(() => undefined)
      if (st !== undefined && st.ino !== this.#ino) yield* readWhole(file)
    }
    yield* this.#drain()
  }

  /** The records written since the last call. */
  async *poll(): AsyncGenerator<AuditRecord> {
    if (this.#fh === undefined) {
      try {
        await this.open()
      } catch (err) {
        if (errorCode(err) === 'ENOENT') return // not there yet
        throw err
      }
    }
    yield* this.#drain()
    let st
    try {
      st = await stat(this.#path)
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err // between rename and re-create
    }
    if (st !== undefined && st.ino !== this.#ino) {
      // Rotated: finish the old file, read the files rotated after it (more than one
      // rotation may have happened since the last poll), then follow the new live file.
      yield* this.#drain()
      this.#decoder.end()
      await this.#fh?.close()
      this.#fh = undefined
      const next = yield* catchUp(this.#path, this.#ino, this.#pollMs, this.#signal)
      if (next === undefined) {
        this.stopped = true
        return
      }
      this.#fh = next.fh
      this.#ino = next.ino
      this.#pos = 0
      this.#decoder = new AuditLineDecoder()
      yield* this.#drain()
    } else if (st !== undefined && st.size < this.#pos) {
      this.#pos = 0 // truncated by someone else
      this.#decoder = new AuditLineDecoder()
    }
  }

  async close(): Promise<void> {
    await this.#fh?.close().catch(() => {})
    this.#fh = undefined
  }

  async *#drain(): AsyncGenerator<AuditRecord> {
    const fh = this.#fh
    if (fh === undefined) return
    const buf = Buffer.alloc(256 * 1024)
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, this.#pos)
      if (bytesRead === 0) return
      this.#pos += bytesRead
      yield* this.#decoder.push(buf.subarray(0, bytesRead))
    }
  }
}

/**
 * After a rotation: yields, oldest first, the records of every rotated file newer than
 * the one with inode `lastIno`, then opens the live file and returns it. If anything
 * rotates meanwhile (the listing is not the same afterwards), repeats; files already read
 * are not read again. If `lastIno` is gone (deleted by retention), every rotated file is
 * newer than it. Returns undefined when stopped while waiting for the new live file.
 */
async function* catchUp(
  path: string,
  lastIno: number,
  pollMs: number,
  signal: AbortSignal | undefined,
): AsyncGenerator<AuditRecord, { fh: FileHandle; ino: number } | undefined> {
  const done = new Set<number>([lastIno])
  const listing = async (): Promise<{ path: string; ino: number }[]> => {
    const entries: { path: string; ino: number }[] = []
    for (const file of await trailFiles(path)) {
      const st = await stat(file).catch(() => undefined)
      if (st !== undefined) entries.push({ path: file, ino: st.ino })
    }
    return entries
  }
  const same = (a: { ino: number }[], b: { ino: number }[]): boolean =>
    a.length === b.length && a.every((e, i) => e.ino === b[i]!.ino)
  for (;;) {
    if (signal?.aborted === true) return undefined
    // A listing taken while a rotation renames files can be inconsistent: take it until
    // two in a row agree.
    let before = await listing()
    for (let again = await listing(); !same(before, again); again = await listing()) before = again
    const live = before.at(-1)
    if (live?.path !== path) {
      await sleep(Math.min(pollMs, 20), signal) // the new live file is not created yet
      continue
    }
    const at = before.findIndex((e) => e.ino === lastIno)
    let moved = false
    for (const e of before.slice(at + 1, -1)) {
      if (done.has(e.ino)) continue
      // Open by name, then check it is still the file listed (a rotation renames them).
      const fh = await open(e.path, 'r').catch(() => undefined)
      if (fh === undefined || (await fh.stat()).ino !== e.ino) {
        await fh?.close()
        moved = true
        break
      }
      yield* readHandle(fh)
      done.add(e.ino)
    }
    if (moved) continue
    let fh: FileHandle
    try {
      fh = await open(path, 'r')
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err
      continue // rotated again, not re-created yet
    }
    const ino = (await fh.stat()).ino
    if (ino === live.ino && same(before, await listing())) return { fh, ino }
    await fh.close()
  }
}

/** The records of an open (rotated, complete) file; closes it. */
async function* readHandle(fh: FileHandle): AsyncGenerator<AuditRecord> {
  const d = new AuditLineDecoder()
  try {
    for await (const chunk of fh.createReadStream({ autoClose: false })) {
      yield* d.push(chunk as Buffer)
    }
  } finally {
    await fh.close()
  }
}

/** The records of a (rotated, complete) file; a vanished file has none. */
async function* readWhole(file: string): AsyncGenerator<AuditRecord> {
  const d = new AuditLineDecoder()
  try {
    for await (const chunk of createReadStream(file)) {
      yield* d.push(chunk as Buffer)
    }
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err
  }
}

/** Where the last (possibly still incomplete) line of the file starts. */
async function startOfLastLine(fh: FileHandle): Promise<number> {
  const { size } = await fh.stat()
  if (size === 0) return 0
  const len = Math.min(size, 64 * 1024)
  const buf = Buffer.alloc(len)
  await fh.read(buf, 0, len, size - len)
  if (buf[len - 1] === 0x0a) return size
  const nl = buf.lastIndexOf(0x0a)
  return nl === -1 ? (len === size ? 0 : size) : size - len + nl + 1
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done)
  })
}

// --- output ------------------------------------------------------------------------

const COLUMNS = ['TIME', 'TYPE', 'USER', 'TARGET', 'BYTES ↑/↓', 'DURATION', 'END/REASON'] as const

/** Table rows (buffered to align them, or printed with fixed widths when following). */
class Output {
  readonly #stream: Writable
  readonly #format: 'table' | 'json'
  readonly #rows: string[][] = []
  #headerDone = false
  /** Print rows at once with fixed widths (follow) instead of aligning at the end. */
  streaming = false

  constructor(stream: Writable, format: 'table' | 'json') {
    this.#stream = stream
    this.#format = format
  }

  async record(r: AuditRecord): Promise<void> {
    if (this.#format === 'json') return this.#write(`${jsonLine(r)}\n`)
    const row = tableRow(r)
    if (!this.streaming) {
      this.#rows.push(row)
      return
    }
    if (!this.#headerDone) {
      this.#headerDone = true
      await this.#write(`${formatRow([...COLUMNS], FOLLOW_WIDTHS)}\n`)
    }
    return this.#write(`${formatRow(row, FOLLOW_WIDTHS)}\n`)
  }

  async end(): Promise<void> {
    if (this.#format === 'json' || this.streaming || this.#rows.length === 0) return
    const widths = COLUMNS.map((c, i) => Math.max(c.length, ...this.#rows.map((r) => r[i]!.length)))
    let text = `${formatRow([...COLUMNS], widths)}\n`
    for (const row of this.#rows) {
      text += `${formatRow(row, widths)}\n`
      if (text.length > 64 * 1024) {
        await this.#write(text)
        text = ''
      }
    }
    await this.#write(text)
  }

  async #write(text: string): Promise<void> {
    if (text === '') return
    if (!this.#stream.write(text)) await once(this.#stream, 'drain')
  }
}

const FOLLOW_WIDTHS = [24, 14, 12, 32, 17, 9, 0]

function formatRow(cells: string[], widths: readonly number[]): string {
  return cells
    .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
    .join('  ')
    .trimEnd()
}

/**
 * JSON text of a record, as stored but with the characters JSON.stringify leaves raw
 * that a terminal may act on (C1 controls, bidi and line separators) as `\\u` escapes:
 * the same JSON value, safe to print.
 */
export function jsonLine(r: AuditRecord): string {
  return JSON.stringify(r).replace(
    /[\u007f-\u009f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
}

/** The widest a table cell gets (longer text is cut, with a mark). */
const MAX_CELL = 200

/**
 * A table row. Every cell is escaped (control, invisible and direction-changing
 * characters, and `\\`) and cut short: a name or claim in a record must not forge a row
 * or hide the rest of the line (records written before names were checked, or by
 * anything else that writes a trail).
 */
function tableRow(r: AuditRecord): string[] {
  return rawRow(r).map((cell) => plainText(String(cell), MAX_CELL))
}

function rawRow(r: AuditRecord): string[] {
  const users = Array.isArray(r.users) ? r.users.join(',') : undefined
  const target =
    r.namespace !== undefined || r.pod !== undefined
      ? `${r.namespace ?? '?'}/${r.pod ?? '?'}${r.port !== undefined ? `:${r.port}` : ''}`
      : r.type === 'request.denied' && r.path !== undefined
        ? `${r.method ?? '?'} ${r.path}`
        : r.sourceAddress !== undefined
          ? `from ${r.sourceAddress}`
          : r.type === 'denials.suppressed'
            ? 'from other sources'
            : '-'
  // A close carries byte counts and a duration: absent there means unknown (a close that
  // crash recovery wrote), `?`; other records have none, `-`.
  const closed = r.type === 'stream.closed' || r.type === 'session.closed'
  const bytes =
    closed || r.bytesClientToPod !== undefined || r.bytesPodToClient !== undefined
      ? `${formatBytes(r.bytesClientToPod)}/${formatBytes(r.bytesPodToClient)}`
      : '-'
  return [
    String(r.time),
    String(r.type),
    r.user ?? users ?? '-',
    target,
    bytes,
    typeof r.durationMs === 'number' ? formatDuration(r.durationMs) : closed ? '?' : '-',
    endColumn(r),
  ]
}

function endColumn(r: AuditRecord): string {
  if (r.type === 'denials.suppressed') {
    const reasons = Object.entries(r.reasons ?? {})
      .map(([reason, n]) => `${reason}×${n}`)
      .join(' ')
    return `${r.count ?? '?'} refusals counted${reasons !== '' ? `: ${reasons}` : ''}`
  }
  const parts: string[] = []
  if (r.endedBy !== undefined)
    parts.push(
      r.endedBy === 'admin' && r.endedByUser !== undefined ? `admin:${r.endedByUser}` : r.endedBy,
    )
  if (r.status !== undefined) parts.push(String(r.status))
  if (r.reason !== undefined && r.reason !== r.endedBy) parts.push(r.reason)
  else if (r.error !== undefined) parts.push(r.error.code)
  return parts.length > 0 ? parts.join(' ') : '-'
}

/** `1234` → `1.2K`; `undefined` → `?`. */
export function formatBytes(n: number | undefined): string {
  if (n === undefined) return '?'
  if (n < 1024) return `${n}`
  const units = ['K', 'M', 'G', 'T']
  let v = n / 1024
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)}${units[u]}`
}

/** `850` → `850ms`, `12300` → `12.3s`, `303000` → `5m03s`, `7440000` → `2h04m`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`
  const s = Math.floor(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}
