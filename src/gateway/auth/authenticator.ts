/**
 * Authentication: one or more identity sources, each optional, tried as kube-apiserver's
 * union authenticator tries its own:
 *
 * - `x509`: a client certificate the TLS handshake verified against the configured
 *   client CA, with the clientAuth extended key usage (src/gateway/auth/x509-source.ts);
 * - `jwt`: JWT bearer tokens verified with `jose` against a JWKS (file or URL), with
 *   required `iss`, `aud` and `exp`, an asymmetric-only algorithm allow-list, clock
 *   tolerance and kube-apiserver-style username/groups claims;
 * - `oidc`: the same for issuers found by OpenID Connect discovery
 *   (src/gateway/auth/oidc-discovery.ts);
 * - `tokenreview`: any other token, asked of the cluster's API server
 *   (src/gateway/auth/token-review.ts).
 *
 * A JWT goes to the source whose issuer its (unverified) `iss` names, exactly; a token no
 * JWT source claims goes to TokenReview when configured. A token one source refuses is
 * not offered to another. The identity says which source vouched for it (`source`, in
 * every audit record).
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
import type { PeerCertificate } from 'node:tls'
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  errors,
  jwtVerify,
} from 'jose'
import type { JSONWebKeySet, JWTPayload, JWTVerifyGetKey } from 'jose'
import { Agent, fetch as undiciFetch } from 'undici'
import { appError, describeError, errorCode, isAppError, newRef } from '../../shared/errors.js'
import type { AppError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { hasControlChars } from '../../shared/text.js'
import type { GatewayConfig } from '../config.js'
import { secretKey } from './bounded-cache.js'

/** The identity sources (the `source` of an identity and of audit records). */
export type IdentitySourceName = 'jwt' | 'oidc' | 'x509' | 'tokenreview'

/** Who a request is. */
export interface Identity {
  /** Username, with the configured prefix. */
  user: string
  /** Groups, with the configured prefix, plus `system:authenticated`. */
  groups: string[]
  /** When the token expires (ms since epoch). */
  expiresAt: number
  /** Which source authenticated it (absent only in identities built by tests). */
  source?: IdentitySourceName
  /** The user's UID, when the source gives one (TokenReview); passed on to SubjectAccessReview. */
  uid?: string
  /** Extra attributes (TokenReview's `user.extra`); passed on to SubjectAccessReview. */
  extra?: Record<string, string[]>
}

/** What a request presents to be authenticated. */
export interface AuthInput {
  /** The Authorization header value(s). */
  authorization: string | string[] | undefined
  /**
   * The client's certificate, when TLS verified one against the client CA
   * (`socket.authorized` and the peer certificate).
   */
  clientCertificate?: PeerCertificate
}

/** A token source: answers for the tokens it is given. */
export interface TokenIdentitySource {
  readonly name: IdentitySourceName
  /** The identity, or a rejection (`PFG_ERR_AUTH_INVALID` with `reason`, or `PFG_ERR_AUTH_UNAVAILABLE`). */
  authenticate(token: string): Promise<Identity>
  close(): void
}

/**
 * The client certificate of a TLS socket when the handshake verified it against the client
 * CA (`authorized`), else undefined. Any socket-like object (an HTTP/2 compatibility proxy).
 */
export function verifiedClientCertificate(socket: unknown): PeerCertificate | undefined {
  const s = socket as { authorized?: unknown; getPeerCertificate?: () => PeerCertificate } | null
  if (s === null || s.authorized !== true || typeof s.getPeerCertificate !== 'function')
    return undefined
  const cert = s.getPeerCertificate()
  return Object.keys(cert).length > 0 ? cert : undefined
}

/** The input of {@link Authenticator.authenticate} for a request on `socket`. */
export function authInput(
  authorization: string | string[] | undefined,
  socket: unknown,
): AuthInput {
  const clientCertificate = verifiedClientCertificate(socket)
  return { authorization, ...(clientCertificate !== undefined ? { clientCertificate } : {}) }
}

/** A JWT source: answers for the tokens of one issuer. */
export interface JwtIdentitySource extends TokenIdentitySource {
  readonly issuer: string
}

/** A certificate source. */
export interface CertificateIdentitySource {
  readonly name: IdentitySourceName
  /** The identity, or why the certificate names none. */
  authenticate(cert: PeerCertificate): Identity | string
}

/** Sources besides the configured static JWKS. */
export interface ExtraSources {
  jwt?: JwtIdentitySource[]
  tokenReview?: TokenIdentitySource
  x509?: CertificateIdentitySource
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

/** How a JWT's claims name the user and groups (kube-apiserver's `claimMappings`). */
export interface ClaimMapping {
  usernameClaim: string
  usernamePrefix: string
  groupsClaim: string
  groupsPrefix: string
}

/** What a JWT must satisfy besides its signature. */
export interface JwtChecks {
  issuer: string
  audience: string[]
  algorithms: string[]
  clockToleranceS: number
}

/** A refusal: `Unauthorized (ref …)` for the client, the reason for the log and the audit. */
export function rejectAuth(reason: string): AppError {
  const ref = newRef()
  const err = appError('PFG_ERR_AUTH_INVALID', `Unauthorized (ref ${ref})`, { ref })
  ;(err as AppError & { reason?: string }).reason = reason
  return err
}

/** The source cannot answer (its server is down): 503 with a ref, the reason logged. */
export function unavailable(reason: string, cause?: unknown): AppError {
  const ref = newRef()
  const err = appError(
    'PFG_ERR_AUTH_UNAVAILABLE',
    `authentication is unavailable (ref ${ref})`,
    cause !== undefined ? { cause, ref } : { ref },
  )
  ;(err as AppError & { reason?: string }).reason = reason
  return err
}

/** Verifies a JWT and maps its claims; rejects with {@link rejectAuth}. */
export async function verifyJwt(
  token: string,
  getKey: JWTVerifyGetKey,
  checks: JwtChecks,
  mapping: ClaimMapping,
  source: IdentitySourceName,
  now: number,
): Promise<Identity> {
  let payload: JWTPayload
  try {
    ;({ payload } = await jwtVerify(token, getKey, {
      issuer: checks.issuer,
      audience: checks.audience,
      algorithms: checks.algorithms,
      clockTolerance: checks.clockToleranceS,
      requiredClaims: ['exp', 'iss', 'aud'],
      currentDate: new Date(now),
    }))
  } catch (err) {
    if (isAppError(err) && err.code === 'PFG_ERR_AUTH_UNAVAILABLE') throw err
    throw rejectAuth(describeJoseError(err))
  }
  const identity = identityFromClaims(payload, mapping, source)
  if (typeof identity === 'string') throw rejectAuth(identity)
  return identity
}

/** The identity the claims name, or why they name none. */
export function identityFromClaims(
  payload: JWTPayload,
  c: ClaimMapping,
  source: IdentitySourceName,
): Identity | string {
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
  return { user, groups, expiresAt: (payload.exp as number) * 1000, source }
}

/** The configured JWKS (file, re-read when it changes; or URL): the `jwt` source. */
class StaticJwksSource implements JwtIdentitySource {
  readonly name = 'jwt'
  readonly issuer: string
  readonly #config: GatewayConfig['auth']
  readonly #logger: Logger
  readonly #now: () => number
  readonly #onReload: () => void
  #getKey: JWTVerifyGetKey
  #watchedFile: string | undefined
  #agent: Agent | undefined

  constructor(
    config: GatewayConfig['auth'],
    jwks: NonNullable<GatewayConfig['auth']['jwks']>,
    logger: Logger,
    now: () => number,
    onReload: () => void,
  ) {
    this.#config = config
    this.issuer = config.issuer
    this.#logger = logger
    this.#now = now
    this.#onReload = onReload
    if ('file' in jwks) {
      this.#getKey = this.#loadFile(jwks.file)
      this.#watchedFile = jwks.file
      watchFile(jwks.file, { interval: 2000, persistent: false }, () => {
        try {
          this.#getKey = this.#loadFile(jwks.file)
          this.#onReload()
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

  authenticate(token: string): Promise<Identity> {
    return verifyJwt(token, this.#getKey, this.#config, this.#config, 'jwt', this.#now())
  }

  close(): void {
    if (this.#watchedFile !== undefined) unwatchFile(this.#watchedFile)
    this.#watchedFile = undefined
    void this.#agent?.close()
  }
}

/** Verifies what requests present, with every configured source. */
export class Authenticator {
  readonly #cache = new Map<string, { identity: Identity; until: number }>()
  readonly #now: () => number
  readonly #jwt: JwtIdentitySource[]
  readonly #tokenReview: TokenIdentitySource | undefined
  readonly #x509: CertificateIdentitySource | undefined

  constructor(
    config: GatewayConfig['auth'] | undefined,
    logger: Logger,
    now: () => number = Date.now,
    extra: ExtraSources = {},
  ) {
    this.#now = now
    const jwks = config?.jwks
    this.#jwt = [
      ...(config !== undefined && jwks !== undefined
        ? [new StaticJwksSource(config, jwks, logger, now, () => this.#cache.clear())]
        : []),
      ...(extra.jwt ?? []),
    ]
    this.#tokenReview = extra.tokenReview
    this.#x509 = extra.x509
  }

  /** The sources in use, in the order tried (for the start-up log and /readyz). */
  get sources(): IdentitySourceName[] {
    return [
      ...(this.#x509 !== undefined ? [this.#x509.name] : []),
      ...new Set(this.#jwt.map((s) => s.name)),
      ...(this.#tokenReview !== undefined ? [this.#tokenReview.name] : []),
    ]
  }

  /**
   * Authenticates a request: its verified client certificate (when the x509 source is
   * on), else its bearer token. Resolves with the identity, or rejects with
   * `PFG_ERR_AUTH_MISSING`/`PFG_ERR_AUTH_INVALID` (generic message + ref) or
   * `PFG_ERR_AUTH_UNAVAILABLE` (a source's server cannot answer; fail closed).
   * A bare header value is accepted for callers that have no certificate to offer.
   */
  async authenticate(input: AuthInput | string | string[] | undefined): Promise<Identity> {
    const req: AuthInput =
      typeof input === 'object' && !Array.isArray(input) ? input : { authorization: input }
    if (req.clientCertificate !== undefined && this.#x509 !== undefined) {
      const identity = this.#x509.authenticate(req.clientCertificate)
      if (typeof identity === 'string') throw rejectAuth(`client certificate: ${identity}`)
      return identity
    }
    const token = bearerToken(req.authorization)
    if (token === undefined) {
      throw appError('PFG_ERR_AUTH_MISSING', 'Unauthorized')
    }
    if (token.length > MAX_TOKEN_BYTES) throw rejectAuth('token too large')
    const now = this.#now()
    const key = secretKey(token)
    const hit = this.#cache.get(key)
    if (hit !== undefined) {
      if (now < hit.until) return hit.identity
      this.#cache.delete(key)
    }
    let issuer: string | undefined
    try {
      const iss = decodeJwt(token).iss
      issuer = typeof iss === 'string' ? iss : undefined
    } catch {
      issuer = undefined // not a JWT: only TokenReview may know it
    }
    const source = issuer !== undefined ? this.#jwt.find((s) => s.issuer === issuer) : undefined
    let identity: Identity
    if (source !== undefined) identity = await source.authenticate(token)
    else if (this.#tokenReview !== undefined) identity = await this.#tokenReview.authenticate(token)
    // No source claims it: the first JWT source's checks say precisely what is wrong.
    else if (this.#jwt[0] !== undefined) identity = await this.#jwt[0].authenticate(token)
    else throw rejectAuth(issuer === undefined ? 'not a JWT' : 'no source for its issuer')
    if (this.#cache.size >= MAX_CACHE_ENTRIES) {
      // Drop the oldest insertion (Map keeps insertion order).
      const oldest = this.#cache.keys().next().value
      if (oldest !== undefined) this.#cache.delete(oldest)
    }
    this.#cache.set(key, { identity, until: Math.min(identity.expiresAt, now + MAX_CACHE_MS) })
    return identity
  }

  close(): void {
    for (const s of this.#jwt) s.close()
    this.#tokenReview?.close()
    this.#cache.clear()
  }
}

/** A name fit to be recorded and shown as it is: printable and not too long. */
export function plainName(name: string): boolean {
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
