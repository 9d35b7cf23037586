/**
 * Configuration of the identity sources besides the static JWKS (`auth.oidc`,
 * `auth.clientCertificates`, `auth.tokenReview`) and of the RBAC authorizer
 * (`authorization.mode: rbac`, `authorization.rbac`): their schema fragments, parsed
 * forms, and the factories that build them (docs/security.md#identity-sources).
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { parseDuration } from '../../shared/config.js'
import type { Logger } from '../../shared/log.js'
import {
  loadInClusterCredentials,
  loadKubeconfigCredentials,
} from '../registry/kube-credentials.js'
import type { ClaimMapping, ExtraSources } from './authenticator.js'
import type { ReviewLimits } from './bounded-cache.js'
import { KubeReviewClient } from './kube-review.js'
import { OidcIssuerSource } from './oidc-discovery.js'
import type { OidcIssuerOptions } from './oidc-discovery.js'
import { TokenReviewSource } from './token-review.js'
import { X509Source } from './x509-source.js'
import { RbacAuthorizer } from '../authz/rbac.js'

const duration = { type: ['string', 'number'] } as const
const stringList = { type: 'array', items: { type: 'string', minLength: 1 } } as const

/** Where the gateway's Kubernetes API credentials come from for reviews (default: in-cluster). */
const kubeAccess = {
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
} as const

const reviewBounds = (ttl: string, negativeTtl: string) =>
  ({
    timeout: { ...duration, default: '5s' },
    cacheTTL: { ...duration, default: ttl },
    negativeCacheTTL: { ...duration, default: negativeTtl },
    maxEntries: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 10_000 },
    maxInFlight: { type: 'integer', minimum: 1, maximum: 10_000, default: 64 },
    perSecond: { type: 'number', exclusiveMinimum: 0, default: 100 },
    burst: { type: 'integer', minimum: 1, default: 200 },
  }) as const

/** Schema properties added to `auth`. */
export const IDENTITY_SCHEMA_PROPERTIES = {
  oidc: {
    type: 'array',
    default: [],
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['issuer', 'audience'],
      properties: {
        issuer: { type: 'string', pattern: '^https://' },
        audience: {
          anyOf: [
            { type: 'string', minLength: 1 },
            { ...stringList, minItems: 1 },
          ],
        },
        caFile: { type: 'string' },
        usernameClaim: { type: 'string' },
        usernamePrefix: { type: 'string' },
        groupsClaim: { type: 'string' },
        groupsPrefix: { type: 'string' },
        timeout: { ...duration, default: '5s' },
        cacheMaxAge: { ...duration, default: '10m' },
        minRefreshInterval: { ...duration, default: '30s' },
      },
    },
  },
  clientCertificates: {
    type: 'object',
    additionalProperties: false,
    required: ['ca'],
    properties: {
      ca: { type: 'string' },
      usernamePrefix: { type: 'string', default: '' },
      groupsPrefix: { type: 'string', default: '' },
    },
  },
  tokenReview: {
    type: 'object',
    additionalProperties: false,
    properties: {
      ...kubeAccess,
      audiences: { ...stringList, default: [] },
      ...reviewBounds('2m', '10s'),
    },
  },
} as const

/** Schema properties added to `authorization`. */
export const AUTHZ_SCHEMA_PROPERTIES = {
  mode: { enum: ['rules', 'rbac'], default: 'rules' },
  rbac: {
    type: 'object',
    additionalProperties: false,
    default: {},
    properties: { ...kubeAccess, ...reviewBounds('5m', '30s') },
  },
} as const

/** How the gateway reaches the API server for reviews. */
export interface KubeAccess {
  kubeconfig?: string
  context?: string
}

/** Review bounds, parsed. */
export interface ReviewSettings extends KubeAccess {
  timeoutMs: number
  cacheTtlMs: number
  negativeCacheTtlMs: number
  maxEntries: number
  limits: ReviewLimits
}

/** The parsed extra identity sources. */
export interface IdentitySettings {
  oidc: Omit<OidcIssuerOptions, 'algorithms' | 'clockToleranceS'>[]
  clientCertificates?: { ca: string; usernamePrefix: string; groupsPrefix: string }
  tokenReview?: ReviewSettings & { audiences: string[] }
}

/** The parsed authorization mode. */
export interface AuthzModeSettings {
  mode: 'rules' | 'rbac'
  rbac: ReviewSettings
}

type RawReview = Record<string, unknown> & {
  kubeconfig?: string
  context?: string
  timeout: string | number
  cacheTTL: string | number
  negativeCacheTTL: string | number
  maxEntries: number
  maxInFlight: number
  perSecond: number
  burst: number
}

function review(raw: RawReview, where: string, p: (v: string) => string): ReviewSettings {
  return {
    ...(raw.kubeconfig !== undefined ? { kubeconfig: p(raw.kubeconfig) } : {}),
    ...(raw.context !== undefined ? { context: raw.context } : {}),
    timeoutMs: parseDuration(raw.timeout, `${where}.timeout`),
    cacheTtlMs: parseDuration(raw.cacheTTL, `${where}.cacheTTL`),
    negativeCacheTtlMs: parseDuration(raw.negativeCacheTTL, `${where}.negativeCacheTTL`),
    maxEntries: raw.maxEntries,
    limits: { maxInFlight: raw.maxInFlight, perSecond: raw.perSecond, burst: raw.burst },
  }
}

/** Parses `auth.oidc`, `auth.clientCertificates` and `auth.tokenReview` (validated). */
export function parseIdentitySettings(
  auth: Record<string, unknown>,
  defaults: ClaimMapping,
  p: (v: string) => string,
): IdentitySettings {
  const oidc = (auth.oidc ?? []) as (Record<string, unknown> & {
    issuer: string
    audience: string | string[]
    timeout: string | number
    cacheMaxAge: string | number
    minRefreshInterval: string | number
  })[]
  const out: IdentitySettings = {
    oidc: oidc.map((o, i) => ({
      issuer: o.issuer,
      audience: Array.isArray(o.audience) ? [...o.audience] : [o.audience],
      ...(typeof o.caFile === 'string' ? { caFile: p(o.caFile) } : {}),
      usernameClaim: (o.usernameClaim as string | undefined) ?? defaults.usernameClaim,
      usernamePrefix: (o.usernamePrefix as string | undefined) ?? defaults.usernamePrefix,
      groupsClaim: (o.groupsClaim as string | undefined) ?? defaults.groupsClaim,
      groupsPrefix: (o.groupsPrefix as string | undefined) ?? defaults.groupsPrefix,
      timeoutMs: parseDuration(o.timeout, `auth.oidc.${i}.timeout`),
      cacheMaxAgeMs: parseDuration(o.cacheMaxAge, `auth.oidc.${i}.cacheMaxAge`),
      minRefreshIntervalMs: parseDuration(
        o.minRefreshInterval,
        `auth.oidc.${i}.minRefreshInterval`,
      ),
    })),
  }
  const cc = auth.clientCertificates as
    { ca: string; usernamePrefix: string; groupsPrefix: string } | undefined
  if (cc !== undefined) out.clientCertificates = { ...cc, ca: p(cc.ca) }
  const tr = auth.tokenReview as (RawReview & { audiences: string[] }) | undefined
  if (tr !== undefined) {
    out.tokenReview = { ...review(tr, 'auth.tokenReview', p), audiences: [...tr.audiences] }
  }
  return out
}

/** Parses `authorization.mode` and `authorization.rbac` (validated). */
export function parseAuthzMode(
  authz: Record<string, unknown>,
  p: (v: string) => string,
): AuthzModeSettings {
  return {
    mode: authz.mode as 'rules' | 'rbac',
    rbac: review(authz.rbac as RawReview, 'authorization.rbac', p),
  }
}

function reviewClient(
  s: ReviewSettings,
  env: Readonly<Record<string, string | undefined>>,
): KubeReviewClient {
  const credentials =
    s.kubeconfig !== undefined
      ? loadKubeconfigCredentials(s.kubeconfig, s.context)
      : loadInClusterCredentials({ env })
  return new KubeReviewClient({ credentials, timeoutMs: s.timeoutMs })
}

/** Builds the configured extra sources. */
export function createIdentitySources(
  settings: IdentitySettings,
  jwt: { algorithms: string[]; clockToleranceS: number },
  logger: Logger,
  env: Readonly<Record<string, string | undefined>>,
): ExtraSources {
  const out: ExtraSources = {
    jwt: settings.oidc.map(
      (o) =>
        new OidcIssuerSource(
          { ...o, algorithms: jwt.algorithms, clockToleranceS: jwt.clockToleranceS },
          logger,
        ),
    ),
  }
  if (settings.clientCertificates !== undefined) {
    out.x509 = new X509Source(settings.clientCertificates)
  }
  const tr = settings.tokenReview
  if (tr !== undefined) {
    out.tokenReview = new TokenReviewSource({
      client: reviewClient(tr, env),
      audiences: tr.audiences,
      cacheTtlMs: tr.cacheTtlMs,
      negativeCacheTtlMs: tr.negativeCacheTtlMs,
      maxEntries: tr.maxEntries,
      limits: tr.limits,
    })
  }
  return out
}

/** The client CA bundle the TLS server verifies client certificates against, if any. */
export function clientCaOf(settings: IdentitySettings): Buffer | undefined {
  const cc = settings.clientCertificates
  return cc !== undefined ? readFileSync(cc.ca) : undefined
}

/** Builds the RBAC authorizer when the mode asks for it. */
export function createRbac(
  settings: AuthzModeSettings,
  env: Readonly<Record<string, string | undefined>>,
): RbacAuthorizer | undefined {
  if (settings.mode !== 'rbac') return undefined
  const s = settings.rbac
  return new RbacAuthorizer({
    client: reviewClient(s, env),
    cacheTtlMs: s.cacheTtlMs,
    negativeCacheTtlMs: s.negativeCacheTtlMs,
    maxEntries: s.maxEntries,
    limits: s.limits,
  })
}
