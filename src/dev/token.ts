/**
 * Development tokens: an ES256 signing key for the dev cluster and `pfgate token`,
 * which mints tokens with it. DEVELOPMENT ONLY: production tokens come from your
 * identity provider; the gateway only verifies them.
 *
 * @module
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import { SignJWT, exportJWK, generateKeyPair, importJWK } from 'jose'
import type { JWK } from 'jose'
import { parseDuration } from '../shared/config.js'

/** Issuer of dev tokens (the dev gateway config requires it). */
export const DEV_ISSUER = 'pfgate-dev'
/** Audience of dev tokens. */
export const DEV_AUDIENCE = 'pfgate'

/** Creates the signing key (private JWK, 0600) and the public JWKS the gateway reads. */
export async function createSigningKey(dir: string): Promise<void> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const kid = `dev-${Date.now().toString(36)}`
  const priv = { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' }
  const pub = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }
  writeFileSync(join(dir, 'signing-key.jwk'), JSON.stringify(priv) + '\n', { mode: 0o600 })
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [pub] }, null, 2) + '\n', {
    mode: 0o644,
  })
}

/** What a dev token says. */
export interface TokenClaims {
  subject: string
  groups: string[]
  /** Lifetime in ms. */
  ttlMs: number
  issuer?: string
  audience?: string
  /** Not-before offset from now, ms (tests). */
  notBeforeMs?: number
}

/** Mints a token with the dev signing key in `dir`. */
export async function mintToken(dir: string, claims: TokenClaims): Promise<string> {
  const file = join(dir, 'signing-key.jwk')
  if (!existsSync(file)) {
    throw new Error(
      `${file} not found: run 'pfgate dev' (npm start) once to create the dev cluster's key`,
    )
  }
  const jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK
  const key = await importJWK(jwk, 'ES256')
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT({ groups: claims.groups })
    .setProtectedHeader({ alg: 'ES256', kid: jwk.kid ?? 'dev', typ: 'JWT' })
    .setSubject(claims.subject)
    .setIssuer(claims.issuer ?? DEV_ISSUER)
    .setAudience(claims.audience ?? DEV_AUDIENCE)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.max(1, Math.round(claims.ttlMs / 1000)))
  if (claims.notBeforeMs !== undefined)
    jwt.setNotBefore(now + Math.round(claims.notBeforeMs / 1000))
  return jwt.sign(key)
}

/**
 * A duration flag. A unit is required: `parseDuration` reads a bare number as milliseconds
 * (right for YAML numbers), so `--ttl 30` would otherwise be refused with a hint about
 * milliseconds, or worse, mean 30 ms.
 */
function flagDuration(value: string, flag: string): number {
  if (!/^\d+(?:\.\d+)?(?:ms|s|m|h)$/.test(value)) {
    throw new RangeError(
      `${flag} ${JSON.stringify(value)}: give a number with a unit (30s, 15m, 8h)`,
    )
  }
  return parseDuration(value, flag)
}

const TOKEN_USAGE = `usage: pfgate token [--user NAME] [--group G ...] [--ttl 1h] [--dir .pfgate]

DEVELOPMENT ONLY. Mints a bearer token for the dev cluster (\`pfgate dev\`), signed with its
key (DIR/signing-key.jwk; the dev gateway trusts DIR/jwks.json). Production gateways verify
tokens from your identity provider and never read this key.

  -u, --user NAME       the subject (sub claim; the username)          default: dev
  -g, --group G         a group (groups claim); repeat for more        default: none
      --ttl DURATION    lifetime (30s, 15m, 8h; at most 720h)          default: 1h
      --not-before DUR  valid only from DUR from now (nbf claim)       default: now
      --dir DIR         the dev cluster's state directory              default: .pfgate

The token goes to stdout; a DEVELOPMENT notice with its claims goes to stderr.
Dev cluster groups: pfgate:developers (port-forward in namespace default), pfgate:admins.
`

/** The longest lifetime \`pfgate token\` mints (dev tokens should not live for ever). */
export const MAX_DEV_TOKEN_TTL_MS = 30 * 86_400_000

/** \`pfgate token\`: exit 0 with the token on stdout, 1 when it cannot mint, 2 on usage errors. */
export async function main(
  argv: string[],
  io: { stdout: Writable; stderr: Writable },
): Promise<number> {
  let values
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        dir: { type: 'string', default: '.pfgate' },
        user: { type: 'string', short: 'u', default: 'dev' },
        group: { type: 'string', short: 'g', multiple: true, default: [] },
        ttl: { type: 'string', default: '1h' },
        'not-before': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    io.stderr.write(`error: ${(err as Error).message}\n${TOKEN_USAGE}`)
    return 2
  }
  if (values.help === true) {
    io.stdout.write(TOKEN_USAGE)
    return 0
  }
  let ttlMs: number
  let notBeforeMs: number | undefined
  try {
    ttlMs = flagDuration(values.ttl, '--ttl')
    if (!(ttlMs >= 1000 && ttlMs <= MAX_DEV_TOKEN_TTL_MS)) {
      throw new RangeError(`--ttl ${values.ttl}: must be between 1s and 720h (30 days)`)
    }
    if (values['not-before'] !== undefined) {
      notBeforeMs = flagDuration(values['not-before'], '--not-before')
    }
    if (values.user === '' || values.group.some((g) => g === '')) {
      throw new RangeError('--user and --group must not be empty')
    }
  } catch (err) {
    io.stderr.write(`error: ${(err as Error).message}\n`)
    return 2
  }
  let token: string
  try {
    token = await mintToken(values.dir, {
      subject: values.user,
      groups: values.group,
      ttlMs,
      ...(notBeforeMs !== undefined ? { notBeforeMs } : {}),
    })
  } catch (err) {
    io.stderr.write(`error: ${(err as Error).message}\n`)
    return 1
  }
  const expires = new Date(Date.now() + ttlMs).toISOString().replace(/\.\d{3}Z$/, 'Z')
  io.stderr.write(
    `pfgate token: DEVELOPMENT token for the dev cluster only (user "${values.user}", ` +
      `groups [${values.group.join(', ')}], expires ${expires})\n`,
  )
  io.stdout.write(token + '\n')
  return 0
}
