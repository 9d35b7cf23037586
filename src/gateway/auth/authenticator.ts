/**
 * Authentication: JWT bearer tokens verified with `jose` against a JWKS (file or
 * URL), with required `iss`, `aud` and `exp`, an asymmetric-only algorithm
 * allow-list, clock tolerance and kube-apiserver-style username/groups claims.
 *
 * Clients learn only "Unauthorized (ref XXXXXXXX)"; the reason (jose's error code
 * and claim) rides on the error (`reason`), and whoever records the refusal logs it with
 * the same ref (within the denial flood budget: docs/audit.md), so an admin can grep for
 * it and the client learns nothing about why (Teleport's tagged messages do the same).
 *
 * The identity's names end up in audit records, logs and admin tables: a username or a
 * group with control, invisible or direction-changing characters, or longer than
 * {@link MAX_CLAIM_LENGTH}, makes the token invalid (an identity provider never issues
 * one; a forged-looking one is refused rather than shown).
 *
 * Verified tokens are cached (bounded, never past their `exp`): a CLI opening
 * thousands of streams with one token pays for one signature check.
 *
 * @module
 */
import { readFileSync, watchFile, unwatchFile } from 'node:fs'
import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors, jwtVerify } from 'jose'
import type { JSONWebKeySet, JWTPayload, JWTVerifyGetKey } from 'jose'
import { Agent, fetch as undiciFetch } from 'undici'
import { appError, describeError, errorCode, newRef } from '../../shared/errors.js'
import type { AppError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { hasControlChars } from '../../shared/text.js'
import type { GatewayConfig } from '../config.js'

/** Who a request is. */
export interface Identity {
  /** Username, with the configured prefix. */
  user: string
  /** Groups, with the configured prefix, plus `system:authenticated`. */
  groups: string[]
  /** When the token expires (ms since epoch). */
  expiresAt: number
}

/** Every authenticated identity is in this group (as in Kubernetes). */
export const AUTHENTICATED_GROUP = 'system:authenticated'

const MAX_CACHE_ENTRIES = 10_000
const MAX_CACHE_MS = 5 * 60_000
const MAX_TOKEN_BYTES = 16 * 1024
/** The longest username or group name accepted (characters, prefix included). */
export const MAX_CLAIM_LENGTH = 1024
/** The most groups a token may carry. */
export const MAX_GROUPS = 1024

/** The `Bearer` token of an Authorization header value, or undefined. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined
  const m = /^Bearer[ \t]+([^ \t]+)[ \t]*$/i.exec(header)
  return m?.[1]
}

function asymmetricOnly(jwks: JSONWebKeySet, source: string, logger: Logger): JSONWebKeySet {
  const keys = jwks.keys.filter((k) => {
    if (k.kty === 'oct') {
      logger.warn({ source, kid: k.kid }, 'ignoring a symmetric (oct) key in the JWKS')
      return false
    }
    return true
  })
  return { keys }
}

/** Verifies bearer tokens. */
export class Authenticator {
  readonly #config: GatewayConfig['auth']
  readonly #logger: Logger
  #getKey: JWTVerifyGetKey
  readonly #cache = new Map<string, { identity: Identity; until: number }>()
  readonly #now: () => number
  #watchedFile: string | undefined
  #agent: Agent | undefined

  constructor(config: GatewayConfig['auth'], logger: Logger, now: () => number = Date.now) {
    this.#config = config
    this.#logger = logger
    this.#now = now
    const jwks = config.jwks
    if ('file' in jwks) {
      this.#getKey = this.#loadFile(jwks.file)
      this.#watchedFile = jwks.file
      watchFile(jwks.file, { interval: 2000, persistent: false }, () => {
        try {
          this.#getKey = this.#loadFile(jwks.file)
          this.#cache.clear()
          logger.info({ file: jwks.file }, 'JWKS reloaded')
        } catch (err) {
          logger.error({ file: jwks.file, err: describeError(err) }, 'JWKS reload failed')
        }
      })
    } else {
      const agent = new Agent({
        connect: {
          timeout: jwks.timeoutMs,
          ...(jwks.caFile !== undefined ? { ca: readFileSync(jwks.caFile) } : {}),
        },
      })
      this.#agent = agent
      // jose refetches on an unknown `kid` (at most once per minRefreshInterval, so forged
      // kids cannot hammer the IdP) and when the cache is older than cacheMaxAge; the
      // timeout bounds each fetch.
      this.#getKey = createRemoteJWKSet(new URL(jwks.url), {
        timeoutDuration: jwks.timeoutMs,
        cacheMaxAge: jwks.cacheMaxAgeMs,
        cooldownDuration: jwks.minRefreshIntervalMs,
        [customFetch]: (url: string, options: object) =>
          undiciFetch(url, { ...options, dispatcher: agent }),
      })
    }
  }

  #loadFile(file: string): JWTVerifyGetKey {
    const jwks = JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet
    if (!Array.isArray(jwks.keys)) {
      throw appError('PFG_ERR_CONFIG_INVALID', `${file}: not a JWKS (no "keys" array)`)
    }
    return createLocalJWKSet(asymmetricOnly(jwks, file, this.#logger))
  }

  /**
   * Verifies the Authorization header value. Resolves with the identity, or
   * rejects with `PFG_ERR_AUTH_MISSING`/`PFG_ERR_AUTH_INVALID` (generic message + ref).
   */
  async authenticate(authorization: string | string[] | undefined): Promise<Identity> {
    const token = bearerToken(authorization)
    if (token === undefined) {
      throw appError('PFG_ERR_AUTH_MISSING', 'Unauthorized')
    }
    const now = this.#now()
    const hit = this.#cache.get(token)
    if (hit !== undefined) {
      if (now < hit.until) return hit.identity
      this.#cache.delete(token)
    }
    if (token.length > MAX_TOKEN_BYTES) throw this.#reject('token too large')
    let payload: JWTPayload
    try {
      ;({ payload } = await jwtVerify(token, this.#getKey, {
        issuer: this.#config.issuer,
        audience: this.#config.audience,
        algorithms: this.#config.algorithms,
        clockTolerance: this.#config.clockToleranceS,
        requiredClaims: ['exp', 'iss', 'aud'],
        currentDate: new Date(now),
      }))
    } catch (err) {
      throw this.#reject(describeJoseError(err))
    }
    const identity = this.#identity(payload)
    if (typeof identity === 'string') throw this.#reject(identity)
    if (this.#cache.size >= MAX_CACHE_ENTRIES) {
      // Drop the oldest insertion (Map keeps insertion order).
      const oldest = this.#cache.keys().next().value
      if (oldest !== undefined) this.#cache.delete(oldest)
    }
    this.#cache.set(token, { identity, until: Math.min(identity.expiresAt, now + MAX_CACHE_MS) })
    return identity
  }

  /** The identity the claims name, or why they name none. */
  #identity(payload: JWTPayload): Identity | string {
    const c = this.#config
    const name = payload[c.usernameClaim]
    if (typeof name !== 'string' || name === '')
      return `missing or invalid username claim "${c.usernameClaim}"`
    const user = c.usernamePrefix + name
    if (!plainName(user))
      return `username claim "${c.usernameClaim}" has control characters or is over ${MAX_CLAIM_LENGTH} characters`
    const rawGroups = payload[c.groupsClaim]
    const claimed = (
      Array.isArray(rawGroups) ? rawGroups : typeof rawGroups === 'string' ? [rawGroups] : []
    ).filter((g): g is string => typeof g === 'string' && g !== '')
    if (claimed.length > MAX_GROUPS)
      return `groups claim "${c.groupsClaim}" has more than ${MAX_GROUPS} groups`
    const groups = claimed.map((g) => c.groupsPrefix + g)
    if (!groups.every(plainName))
      return `groups claim "${c.groupsClaim}" has a group with control characters or over ${MAX_CLAIM_LENGTH} characters`
    groups.push(AUTHENTICATED_GROUP)
    return { user, groups, expiresAt: (payload.exp as number) * 1000 }
  }

  #reject(reason: string): AppError {
    const ref = newRef()
    const err = appError('PFG_ERR_AUTH_INVALID', `Unauthorized (ref ${ref})`, { ref })
    // The details for the record (forward/audit-events.ts reads them), never for the client.
    ;(err as AppError & { reason?: string }).reason = reason
    return err
  }

  close(): void {
    if (this.#watchedFile !== undefined) unwatchFile(this.#watchedFile)
    this.#watchedFile = undefined
    this.#cache.clear()
    void this.#agent?.close()
  }
}

/** A name fit to be recorded and shown as it is: printable and not too long. */
function plainName(name: string): boolean {
  return name.length <= MAX_CLAIM_LENGTH && !hasControlChars(name)
}

/** A log-friendly reason from a jose error (code and claim), never the token. */
export function describeJoseError(err: unknown): string {
  if (err instanceof errors.JWTClaimValidationFailed) {
    return `${err.code}: claim "${err.claim}" ${err.reason}`
  }
  if (err instanceof errors.JWTExpired) return `${err.code}: token expired`
  const code = errorCode(err)
  if (code !== undefined && code.startsWith('ERR_J')) return `${code}: ${(err as Error).message}`
  return `invalid token: ${err instanceof Error ? err.message : String(err)}`
}
