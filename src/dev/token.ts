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

/** `pfgate token`. */
export async function main(
  argv: string[],
  io: { stdout: Writable; stderr: Writable },
): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string', default: '.pfgate' },
      user: { type: 'string', short: 'u', default: 'dev' },
      group: { type: 'string', short: 'g', multiple: true, default: [] },
      ttl: { type: 'string', default: '24h' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help === true) {
    io.stdout.write(
      'usage: pfgate token [--user NAME] [--group G ...] [--ttl 24h] [--dir .pfgate]\n' +
        'Mints a DEVELOPMENT token signed with the dev cluster key (.pfgate/signing-key.jwk).\n',
    )
    return 0
  }
  const token = await mintToken(values.dir, {
    subject: values.user,
    groups: values.group,
    ttlMs: parseDuration(values.ttl, '--ttl'),
  })
  io.stderr.write('pfgate token: DEVELOPMENT token for the dev cluster only\n')
  io.stdout.write(token + '\n')
  return 0
}
