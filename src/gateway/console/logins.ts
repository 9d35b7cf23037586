/**
 * The console's logins: an admin pastes a bearer token once; the gateway verifies it and
 * keeps the identity under a random id that the browser holds in an `HttpOnly`, `Secure`,
 * `SameSite=Strict` cookie. Each login has its own CSRF token, which the page sends in a
 * header on every state-changing call (the synchronizer-token pattern); the plugin also
 * checks `Origin` and `Sec-Fetch-Site`. Bounded: at most `max` logins (the oldest goes),
 * each ending at its token's expiry, after `maxAgeMs`, or after `idleMs` unused.
 *
 * @module
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import type { Identity } from '../auth/authenticator.js'

/** The cookie: `__Host-` makes browsers require Secure, Path=/ and no Domain. */
export const COOKIE_NAME = '__Host-pfgate-console'
/** The header the page sends its CSRF token in. */
export const CSRF_HEADER = 'x-pfgate-csrf'

/** One admin's login. */
export interface ConsoleLogin {
  readonly id: string
  readonly identity: Identity
  readonly csrf: string
  readonly createdAt: number
  lastSeen: number
  /** When it ends whatever happens (token expiry or maximum age). */
  readonly expiresAt: number
}

export interface LoginLimits {
  /** Unused this long, a login ends. */
  idleMs: number
  /** A login lasts at most this long (and never past its token's expiry). */
  maxAgeMs: number
  /** At most this many logins at once (the oldest ends first). */
  max: number
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  idleMs: 30 * 60_000,
  maxAgeMs: 8 * 3_600_000,
  max: 256,
}

function token(): string {
  return randomBytes(32).toString('base64url')
}

/** The logins of one gateway (memory only: a restart logs everyone out). */
export class ConsoleLogins {
  readonly #limits: LoginLimits
  /** In creation order (the first is the oldest). */
  readonly #logins = new Map<string, ConsoleLogin>()

  constructor(limits: LoginLimits = DEFAULT_LOGIN_LIMITS) {
    this.#limits = limits
  }

  get size(): number {
    return this.#logins.size
  }

  create(identity: Identity, now: number = Date.now()): ConsoleLogin {
    while (this.#logins.size >= this.#limits.max) {
      const oldest = this.#logins.keys().next().value as string
      this.#logins.delete(oldest)
    }
    const login: ConsoleLogin = {
      id: token(),
      identity,
      csrf: token(),
      createdAt: now,
      lastSeen: now,
      expiresAt: Math.min(identity.expiresAt, now + this.#limits.maxAgeMs),
    }
    this.#logins.set(login.id, login)
    return login
  }

  /** The live login of a cookie value (and it counts as used), or undefined. */
  get(id: string | undefined, now: number = Date.now()): ConsoleLogin | undefined {
    if (id === undefined) return undefined
    const login = this.#logins.get(id)
    if (login === undefined) return undefined
    if (now >= login.expiresAt || now - login.lastSeen >= this.#limits.idleMs) {
      this.#logins.delete(id)
      return undefined
    }
    login.lastSeen = now
    return login
  }

  delete(id: string): void {
    this.#logins.delete(id)
  }
}

/** Whether a CSRF token presented equals the login's (constant time). */
export function csrfMatches(
  login: ConsoleLogin,
  presented: string | string[] | undefined,
): boolean {
  if (typeof presented !== 'string') return false
  const a = Buffer.from(presented)
  const b = Buffer.from(login.csrf)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** The value of one cookie in a `Cookie` header, or undefined. */
export function cookieValue(
  header: string | string[] | undefined,
  name: string,
): string | undefined {
  const text = Array.isArray(header) ? header.join('; ') : header
  if (text === undefined || text.length > 16_384) return undefined
  for (const part of text.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

/** The `Set-Cookie` value of a login (or, with `undefined`, of a logout). */
export function setCookie(login: ConsoleLogin | undefined, now: number = Date.now()): string {
  const attrs = 'Path=/; HttpOnly; Secure; SameSite=Strict'
  if (login === undefined) return `${COOKIE_NAME}=; ${attrs}; Max-Age=0`
  const maxAge = Math.max(0, Math.floor((login.expiresAt - now) / 1000))
  return `${COOKIE_NAME}=${login.id}; ${attrs}; Max-Age=${maxAge}`
}
