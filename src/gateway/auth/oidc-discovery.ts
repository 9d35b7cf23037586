/**
 * OIDC issuer discovery: configure only the issuer URL and the audience; the gateway
 * reads `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0, section 4),
 * checks that the document's `issuer` is exactly the configured one (its section 4.3: no trailing
 * slash games, no other host), takes its `jwks_uri` and verifies tokens against that key
 * set. Key rotation is followed: `jose` refetches the key set when a token names an
 * unknown `kid` (at most once per `minRefreshInterval`, so forged kids cannot hammer the
 * IdP) and when its copy is older than `cacheMaxAge`.
 *
 * Discovery runs on first use and again after a failure (not more often than
 * `minRefreshInterval`): a gateway started while its IdP is down comes up and answers
 * 503 (`PFG_ERR_AUTH_UNAVAILABLE`) for that issuer's tokens until the IdP is back. Every
 * fetch has a deadline and a size bound.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { createRemoteJWKSet, customFetch } from 'jose'
import type { JWTVerifyGetKey } from 'jose'
import { Agent, fetch as undiciFetch } from 'undici'
import type { Response } from 'undici'
import { describeError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { unavailable, verifyJwt } from './authenticator.js'
import type { ClaimMapping, Identity, JwtChecks, JwtIdentitySource } from './authenticator.js'

/** The most bytes of a discovery document read. */
const MAX_DISCOVERY_BYTES = 64 * 1024

/** One issuer found by discovery. */
export interface OidcIssuerOptions extends ClaimMapping {
  /** `https://…`, exactly as the tokens' `iss` says it. */
  issuer: string
  audience: string[]
  algorithms: string[]
  clockToleranceS: number
  /** PEM CA bundle for the IdP's TLS (the system roots when absent). */
  caFile?: string
  timeoutMs: number
  cacheMaxAgeMs: number
  minRefreshIntervalMs: number
}

/** The `oidc` source for one issuer. */
export class OidcIssuerSource implements JwtIdentitySource {
  readonly name = 'oidc'
  readonly issuer: string
  readonly #o: OidcIssuerOptions
  readonly #logger: Logger
  readonly #now: () => number
  readonly #agent: Agent
  #getKey: JWTVerifyGetKey | undefined
  #discovering: Promise<JWTVerifyGetKey> | undefined
  #failedAt = -Infinity
  #lastError = ''

  constructor(options: OidcIssuerOptions, logger: Logger, now: () => number = Date.now) {
    this.#o = options
    this.issuer = options.issuer
    this.#logger = logger
    this.#now = now
    this.#agent = new Agent({
      connect: {
        timeout: options.timeoutMs,
        ...(options.caFile !== undefined ? { ca: readFileSync(options.caFile) } : {}),
      },
    })
  }

  /** Discovers the issuer now (start-up calls this so that the log says early if it fails). */
  async discover(): Promise<void> {
    await this.#keys()
  }

  #keys(): Promise<JWTVerifyGetKey> {
    if (this.#getKey !== undefined) return Promise.resolve(this.#getKey)
    if (this.#discovering !== undefined) return this.#discovering
    if (this.#now() - this.#failedAt < this.#o.minRefreshIntervalMs) {
      return Promise.reject(
        unavailable(`OIDC discovery for ${this.issuer} failed recently: ${this.#lastError}`),
      )
    }
    this.#discovering = this.#fetchDiscovery()
      .then((jwksUri) => {
        const agent = this.#agent
        const getKey = createRemoteJWKSet(new URL(jwksUri), {
          timeoutDuration: this.#o.timeoutMs,
          cacheMaxAge: this.#o.cacheMaxAgeMs,
          cooldownDuration: this.#o.minRefreshIntervalMs,
          [customFetch]: (url: string, options: object) =>
            undiciFetch(url, { ...options, dispatcher: agent }),
        })
        this.#getKey = getKey
        this.#logger.info({ issuer: this.issuer, jwksUri }, 'OIDC issuer discovered')
        return getKey
      })
      .catch((err: unknown) => {
        this.#failedAt = this.#now()
        // undici's "fetch failed" keeps the reason (ECONNREFUSED, a TLS error) in its cause.
        const cause = (err as { cause?: unknown }).cause
        this.#lastError =
          describeError(err) + (cause !== undefined ? ` (${describeError(cause)})` : '')
        this.#logger.warn({ issuer: this.issuer, err: this.#lastError }, 'OIDC discovery failed')
        throw unavailable(`OIDC discovery for ${this.issuer}: ${this.#lastError}`, err)
      })
      .finally(() => {
        this.#discovering = undefined
      })
    return this.#discovering
  }

  async #fetchDiscovery(): Promise<string> {
    const url = `${this.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`
    const res = await undiciFetch(url, {
      dispatcher: this.#agent,
      signal: AbortSignal.timeout(this.#o.timeoutMs),
      headers: { accept: 'application/json' },
      redirect: 'error',
    })
    if (res.status !== 200) {
      await res.body?.cancel()
      throw new Error(`${url}: HTTP ${res.status}`)
    }
    const text = await boundedText(res, MAX_DISCOVERY_BYTES)
    let doc: { issuer?: unknown; jwks_uri?: unknown }
    try {
      doc = JSON.parse(text) as typeof doc
    } catch {
      throw new Error(`${url}: not JSON`)
    }
    if (doc.issuer !== this.issuer) {
      throw new Error(
        `${url} names issuer ${JSON.stringify(doc.issuer)}, not ${JSON.stringify(this.issuer)} (they must be identical)`,
      )
    }
    if (typeof doc.jwks_uri !== 'string' || !/^https:\/\//.test(doc.jwks_uri)) {
      throw new Error(`${url}: jwks_uri ${JSON.stringify(doc.jwks_uri)} is not an https URL`)
    }
    return doc.jwks_uri
  }

  async authenticate(token: string): Promise<Identity> {
    const getKey = await this.#keys()
    const checks: JwtChecks = this.#o
    return verifyJwt(token, getKey, checks, this.#o, 'oidc', this.#now())
  }

  close(): void {
    void this.#agent.close()
  }
}

async function boundedText(res: Response, max: number): Promise<string> {
  const reader = res.body?.getReader()
  if (reader === undefined) return ''
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = (await reader.read()) as { done: boolean; value: Uint8Array }
    if (done) break
    size += value.length
    if (size > max) {
      await reader.cancel()
      throw new Error(`discovery document over ${max} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}
