/**
 * `pfgate login`'s token cache: one JSON file per issuer, client and scope set under
 * `$PFGATE_CACHE_DIR`, else `$XDG_CACHE_HOME/pfgate/oidc`, else `~/.cache/pfgate/oidc`
 * (directory 0700, files 0600, written to a temporary file and renamed so that a reader
 * never sees half a file). It holds the ID token and the refresh token: secrets, readable
 * by the user only, never printed.
 *
 * Two plugins run at once (kubectl and pfgate, or many streams of one) take turns with a
 * lock file, so that one refresh's rotated refresh token is not lost to the other.
 *
 * @module
 */
import { createHash } from 'node:crypto'
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { LoginSettings, OidcTokens } from './oidc.js'

/** The cache directory for `env`. */
export function cacheDir(env: NodeJS.ProcessEnv): string {
  if (env.PFGATE_CACHE_DIR !== undefined && env.PFGATE_CACHE_DIR !== '') return env.PFGATE_CACHE_DIR
  const base =
    env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== ''
      ? env.XDG_CACHE_HOME
      : join(env.HOME ?? homedir(), '.cache')
  return join(base, 'pfgate', 'oidc')
}

/** The cache file of one login. */
export function cacheFile(env: NodeJS.ProcessEnv, s: LoginSettings): string {
  const id = createHash('sha256')
    .update(JSON.stringify([s.issuer, s.clientId, [...s.scopes].sort()]))
    .digest('hex')
    .slice(0, 32)
  return join(cacheDir(env), `${id}.json`)
}

/** The cached tokens, or undefined. */
export function readCache(file: string): OidcTokens | undefined {
  let doc: unknown
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'))
  } catch {
    return undefined
  }
  const o = doc as Partial<OidcTokens>
  if (typeof o.idToken !== 'string' || typeof o.expiresAt !== 'number') return undefined
  return {
    idToken: o.idToken,
    expiresAt: o.expiresAt,
    ...(typeof o.refreshToken === 'string' ? { refreshToken: o.refreshToken } : {}),
  }
}

/** Writes the tokens (0600, atomically). */
export function writeCache(file: string, tokens: OidcTokens): void {
  const dir = join(file, '..')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify(tokens), { mode: 0o600 })
  renameSync(tmp, file)
}

/** Forgets a login. */
export function clearCache(file: string): void {
  rmSync(file, { force: true })
}

/** A lock older than this is a crashed holder's. */
const STALE_LOCK_MS = 120_000

/** Runs `fn` holding the cache file's lock (waits up to `waitMs` for it). */
export async function withCacheLock<T>(
  file: string,
  waitMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 })
  const lock = `${file}.lock`
  const deadline = Date.now() + waitMs
  let held = false
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx', 0o600))
      held = true
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      try {
        if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) rmSync(lock, { force: true })
      } catch {
        // gone meanwhile
      }
      if (Date.now() > deadline) break // proceed without it rather than hang a forward
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  try {
    return await fn()
  } finally {
    if (held) rmSync(lock, { force: true })
  }
}
