/**
 * TokenReview delegation: a token that no JWT source claims is asked of the cluster's API
 * server (`POST /apis/authentication.k8s.io/v1/tokenreviews`), which accepts whatever it
 * accepts — ServiceAccount tokens, its own OIDC issuers, webhook tokens. The answer's
 * `user` (username, uid, groups, extra) is the identity.
 *
 * Bounded, because every caller that reaches this has proven nothing yet:
 * - answers are cached by the token's SHA-256 (the token itself is not kept), positive
 *   ones for `cacheTTL` (never past a JWT's own `exp`), negative ones for
 *   `negativeCacheTTL`, at most `maxEntries`;
 * - concurrent requests with one token share one review; at most `maxInFlight` reviews
 *   at once and `perSecond` (burst `burst`) — beyond, 503 at once, nothing queued;
 * - each review has a deadline. The API server down, slow or refusing the gateway's own
 *   credentials: 503 `PFG_ERR_AUTH_UNAVAILABLE` (fail closed), the reason logged and
 *   audited with the ref.
 *
 * @module
 */
import { decodeJwt } from 'jose'
import { isAppError } from '../../shared/errors.js'
import {
  AUTHENTICATED_GROUP,
  MAX_GROUPS,
  plainName,
  rejectAuth,
  unavailable,
} from './authenticator.js'
import type { Identity, TokenIdentitySource } from './authenticator.js'
import { ReviewLimiter, TtlCache, secretKey } from './bounded-cache.js'
import type { ReviewLimits } from './bounded-cache.js'
import type { KubeReviewClient } from './kube-review.js'

export const TOKEN_REVIEW_PATH = '/apis/authentication.k8s.io/v1/tokenreviews'

/** Options of {@link TokenReviewSource}. */
export interface TokenReviewOptions {
  client: KubeReviewClient
  /** Audiences to ask for (`spec.audiences`); the answer must name one of them. Empty: the API server's. */
  audiences: string[]
  cacheTtlMs: number
  negativeCacheTtlMs: number
  maxEntries: number
  limits: ReviewLimits
  now?: () => number
}

type Answer = { identity: Identity } | { reason: string }

/** The `tokenreview` source. */
export class TokenReviewSource implements TokenIdentitySource {
  readonly name = 'tokenreview'
  readonly #o: TokenReviewOptions
  readonly #now: () => number
  readonly #cache: TtlCache<Answer>
  readonly #limiter: ReviewLimiter<Answer>

  constructor(options: TokenReviewOptions) {
    this.#o = options
    this.#now = options.now ?? Date.now
    this.#cache = new TtlCache(options.maxEntries, this.#now)
    this.#limiter = new ReviewLimiter('token reviews', options.limits, this.#now)
  }

  async authenticate(token: string): Promise<Identity> {
    const key = secretKey(token)
    let answer = this.#cache.get(key)
    if (answer === undefined) {
      try {
        answer = await this.#limiter.run(key, () => this.#review(token))
      } catch (err) {
        const why = isAppError(err) ? err.message : String(err)
        throw unavailable(`TokenReview: ${why}`, err)
      }
    }
    if ('reason' in answer) throw rejectAuth(answer.reason)
    return answer.identity
  }

  async #review(token: string): Promise<Answer> {
    const body = {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, ...(this.#o.audiences.length > 0 ? { audiences: this.#o.audiences } : {}) },
    }
    const doc = await this.#o.client.create(TOKEN_REVIEW_PATH, body)
    const answer = this.#interpret(doc, token)
    const key = secretKey(token)
    if ('identity' in answer) {
      this.#cache.set(
        key,
        answer,
        Math.min(this.#o.cacheTtlMs, answer.identity.expiresAt - this.#now()),
      )
    } else {
      this.#cache.set(key, answer, this.#o.negativeCacheTtlMs)
    }
    return answer
  }

  #interpret(doc: Record<string, unknown>, token: string): Answer {
    if (doc.kind !== 'TokenReview')
      return { reason: 'TokenReview: the API server answered with something else' }
    const status = (doc.status ?? {}) as Record<string, unknown>
    if (status.authenticated !== true) {
      const err = typeof status.error === 'string' ? `: ${status.error.slice(0, 200)}` : ''
      return { reason: `TokenReview: not authenticated${err}` }
    }
    if (this.#o.audiences.length > 0) {
      const got = Array.isArray(status.audiences) ? status.audiences : []
      if (!got.some((a) => this.#o.audiences.includes(a as string)))
        return { reason: 'TokenReview: the token is not for this audience' }
    }
    const user = (status.user ?? {}) as Record<string, unknown>
    const name = user.username
    if (typeof name !== 'string' || name === '' || !plainName(name))
      return { reason: 'TokenReview: no username, or one with control characters or too long' }
    const groups = Array.isArray(user.groups) ? user.groups : []
    if (groups.length > MAX_GROUPS || !groups.every((g) => typeof g === 'string' && plainName(g)))
      return { reason: 'TokenReview: a group with control characters or too long, or too many' }
    const all = groups as string[]
    if (!all.includes(AUTHENTICATED_GROUP)) all.push(AUTHENTICATED_GROUP)
    const identity: Identity = {
      user: name,
      groups: all,
      expiresAt: this.#expiry(token),
      source: 'tokenreview',
    }
    if (typeof user.uid === 'string' && user.uid !== '' && plainName(user.uid))
      identity.uid = user.uid
    const extra = extraOf(user.extra)
    if (extra !== undefined) identity.extra = extra
    return { identity }
  }

  /** A JWT's own `exp` when it has one, else the cache lifetime. */
  #expiry(token: string): number {
    const fallback = this.#now() + this.#o.cacheTtlMs
    try {
      const exp = decodeJwt(token).exp
      return typeof exp === 'number' ? Math.min(exp * 1000, fallback) : fallback
    } catch {
      return fallback
    }
  }

  close(): void {
    this.#cache.clear()
    void this.#o.client.close()
  }
}

/** `user.extra` when it is a map of string lists (passed on to SubjectAccessReview), bounded. */
function extraOf(v: unknown): Record<string, string[]> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined
  const out: Record<string, string[]> = {}
  let n = 0
  for (const [k, list] of Object.entries(v as Record<string, unknown>)) {
    if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) continue
    if (++n > 64) break
    out[k.slice(0, 256)] = list.slice(0, 64).map((x) => x.slice(0, 1024))
  }
  return n > 0 ? out : undefined
}
