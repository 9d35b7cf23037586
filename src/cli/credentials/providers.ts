/**
 * The CLI's credential providers: a static token or certificate, a token file re-read
 * when it changes (as kubectl re-reads `tokenFile`), and an exec plugin whose credential
 * is cached until shortly before its `expirationTimestamp` and then refreshed in the
 * background while the old one still works, so a forward left running for days keeps
 * opening streams. A refresh is single-flight: a thousand connections arriving at the
 * moment a token expires run the plugin once.
 *
 * A token that has expired (a JWT whose `exp` has passed) is reported once — "token
 * expired at …; log in again" — not once per connection.
 *
 * @module
 */
import { readFileSync, statSync } from 'node:fs'
import { appError } from '../../shared/errors.js'
import { runExecPlugin } from './exec-plugin.js'
import type { ExecClusterInfo, ExecConfig } from './exec-plugin.js'
import type { Credential, CredentialProvider, Warn } from './types.js'

/** The `exp` of a JWT, in ms, or undefined when the token is not a JWT with one (never verified). */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.')
  if (parts.length !== 3) return undefined
  try {
    const payload = JSON.parse(Buffer.from(parts[1] as string, 'base64url').toString('utf8')) as {
      exp?: unknown
    }
    return typeof payload.exp === 'number' && Number.isFinite(payload.exp)
      ? payload.exp * 1000
      : undefined
  } catch {
    return undefined
  }
}

/** Says "token expired at …; log in again" once per expired token. */
class ExpiryNotice {
  readonly #warn: Warn
  readonly #now: () => number
  #told: string | undefined

  constructor(warn: Warn, now: () => number) {
    this.#warn = warn
    this.#now = now
  }

  /** The last token looked at and its `exp` (decoded once per token, not per connection). */
  #seen: string | undefined
  #seenExp: number | undefined

  check(token: string | undefined, what: string): void {
    if (token === undefined || token === this.#told) return
    if (token !== this.#seen) {
      this.#seen = token
      this.#seenExp = jwtExpiry(token)
    }
    const exp = this.#seenExp
    if (exp === undefined || exp > this.#now()) return
    this.#told = token
    this.#warn(`${what} expired at ${new Date(exp).toISOString()}; log in again`)
  }
}

/** A token and/or certificate that never changes (flags, kubeconfig `token`, certificate files). */
export class StaticCredentials implements CredentialProvider {
  readonly #cred: Credential
  readonly #notice: ExpiryNotice

  constructor(cred: Credential, warn: Warn, now: () => number = Date.now) {
    const exp = cred.token !== undefined ? jwtExpiry(cred.token) : undefined
    this.#cred = exp !== undefined ? { ...cred, expiresAt: exp } : cred
    this.#notice = new ExpiryNotice(warn, now)
  }

  get(): Promise<Credential> {
    this.#notice.check(this.#cred.token, 'token')
    return Promise.resolve(this.#cred)
  }

  refresh(_rejected: Credential): Promise<Credential | undefined> {
    this.#notice.check(this.#cred.token, 'token')
    return Promise.resolve(undefined)
  }

  close(): void {}
}

/** How often a token file's metadata is looked at, at most. */
const TOKEN_FILE_CHECK_MS = 1000

/** A `tokenFile`: re-read when its inode, size or modification time changes, and after a 401. */
export class TokenFileCredentials implements CredentialProvider {
  readonly #path: string
  readonly #extra: Credential
  readonly #now: () => number
  readonly #notice: ExpiryNotice
  #cred: Credential
  #stamp = ''
  #checkedAt = 0

  constructor(path: string, extra: Credential, warn: Warn, now: () => number = Date.now) {
    this.#path = path
    this.#extra = extra
    this.#now = now
    this.#notice = new ExpiryNotice(warn, now)
    this.#cred = this.#read(true) ?? extra
  }

  #read(force: boolean): Credential | undefined {
    let stamp: string
    try {
      const st = statSync(this.#path)
      stamp = `${st.ino}:${st.size}:${st.mtimeMs}`
    } catch (err) {
      throw appError(
        'PFG_ERR_CLI_CREDENTIALS',
        `cannot read token file ${this.#path}: ${(err as Error).message}`,
      )
    }
    if (!force && stamp === this.#stamp) return undefined
    let token: string
    try {
      token = readFileSync(this.#path, 'utf8').trim()
    } catch (err) {
      throw appError(
        'PFG_ERR_CLI_CREDENTIALS',
        `cannot read token file ${this.#path}: ${(err as Error).message}`,
      )
    }
    this.#stamp = stamp
    const exp = jwtExpiry(token)
    return { ...this.#extra, token, ...(exp !== undefined ? { expiresAt: exp } : {}) }
  }

  get(): Promise<Credential> {
    const now = this.#now()
    if (now - this.#checkedAt >= TOKEN_FILE_CHECK_MS) {
      this.#checkedAt = now
      try {
        this.#cred = this.#read(false) ?? this.#cred
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)))
      }
    }
    this.#notice.check(this.#cred.token, `token in ${this.#path}`)
    return Promise.resolve(this.#cred)
  }

  refresh(rejected: Credential): Promise<Credential | undefined> {
    try {
      this.#cred = this.#read(true) ?? this.#cred
      this.#checkedAt = this.#now()
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    if (this.#cred.token !== rejected.token) return Promise.resolve(this.#cred)
    this.#notice.check(this.#cred.token, `token in ${this.#path}`)
    return Promise.resolve(undefined)
  }

  close(): void {}
}

/** After a failed run, how long the failure is reused before the plugin runs again. */
const EXEC_FAILURE_HOLD_MS = 2000

/** Options of {@link ExecCredentials}. */
export interface ExecCredentialsOptions {
  config: ExecConfig
  cluster?: ExecClusterInfo
  env: NodeJS.ProcessEnv
  terminal: boolean
  stderr?: NodeJS.WritableStream
  timeoutMs?: number
  warn: Warn
  now?: () => number
  /** Runs the plugin (tests count runs through the real plugin's side effects instead). */
  run?: typeof runExecPlugin
}

/**
 * How long before expiry a credential is refreshed: a fifth of its lifetime, between
 * 1 s and 5 minutes (a 1-hour token is refreshed 5 minutes early, a 10 s one 2 s early).
 */
export function refreshMargin(obtainedAt: number, expiresAt: number): number {
  return Math.min(5 * 60_000, Math.max(1000, (expiresAt - obtainedAt) / 5))
}

/** An exec plugin's credential, cached and refreshed before it expires. */
export class ExecCredentials implements CredentialProvider {
  readonly #o: ExecCredentialsOptions
  readonly #now: () => number
  #current: { cred: Credential; obtainedAt: number } | undefined
  #inflight: Promise<Credential> | undefined
  #failure: { err: Error; at: number } | undefined
  #reported: string | undefined

  constructor(options: ExecCredentialsOptions) {
    this.#o = options
    this.#now = options.now ?? Date.now
  }

  get(): Promise<Credential> {
    const now = this.#now()
    const cur = this.#current
    if (cur !== undefined) {
      const exp = cur.cred.expiresAt
      if (exp === undefined) return Promise.resolve(cur.cred)
      if (now < exp - refreshMargin(cur.obtainedAt, exp)) return Promise.resolve(cur.cred)
      if (now < exp) {
        // Due for refresh and still valid: refresh in the background, keep using it.
        this.#run().catch(() => undefined)
        return Promise.resolve(cur.cred)
      }
    }
    return this.#run()
  }

  refresh(rejected: Credential): Promise<Credential | undefined> {
    const cur = this.#current
    if (cur !== undefined && cur.cred !== rejected) return Promise.resolve(cur.cred)
    this.#current = undefined
    return this.#run()
  }

  /** Runs the plugin, once however many callers want a credential. */
  #run(): Promise<Credential> {
    const f = this.#failure
    if (f !== undefined && this.#now() - f.at < EXEC_FAILURE_HOLD_MS) return Promise.reject(f.err)
    if (this.#inflight !== undefined) return this.#inflight
    const run = this.#o.run ?? runExecPlugin
    const started = this.#now()
    const p = run(this.#o.config, {
      terminal: this.#o.terminal,
      env: this.#o.env,
      ...(this.#o.cluster !== undefined ? { cluster: this.#o.cluster } : {}),
      ...(this.#o.stderr !== undefined ? { stderr: this.#o.stderr } : {}),
      ...(this.#o.timeoutMs !== undefined ? { timeoutMs: this.#o.timeoutMs } : {}),
      now: this.#now,
    })
      .then(
        (cred) => {
          this.#current = { cred, obtainedAt: started }
          this.#failure = undefined
          this.#reported = undefined
          return cred
        },
        (err: Error) => {
          this.#failure = { err, at: this.#now() }
          if (this.#reported !== err.message) {
            this.#reported = err.message
            this.#o.warn(`error: ${err.message}`)
          }
          const cur = this.#current
          // A failed early refresh leaves the still-valid credential in place.
          if (cur?.cred.expiresAt !== undefined && this.#now() < cur.cred.expiresAt) return cur.cred
          throw err
        },
      )
      .finally(() => {
        this.#inflight = undefined
      })
    this.#inflight = p
    return p
  }

  close(): void {}
}
