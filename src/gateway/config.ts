/**
 * The gateway's configuration (YAML; example in config/gateway.yaml): listeners,
 * TLS, the agent hop, the registry, authentication, authorization, limits, audit.
 * Validated at start-up with every problem listed; the result is frozen and
 * fully defaulted (durations in ms, sizes in bytes).
 *
 * @module
 */
import { dirname, resolve } from 'node:path'
import type { FromSchema } from 'json-schema-to-ts'
import { parseDuration, parseSize, readYamlFile, validateConfig } from '../shared/config.js'
import { appError } from '../shared/errors.js'
import { DEFAULT_AUDIT_RETENTION } from './audit/file-sink.js'
import { DEFAULT_SPOOL_MAX_BYTES } from './audit/spool.js'
import { DEFAULT_WEBHOOK_BATCH_RECORDS, DEFAULT_WEBHOOK_TIMEOUT_MS } from './audit/webhook-sink.js'
import { KUBE_REGISTRY_CONFIG_SCHEMA, parseKubeRegistryConfig } from './registry/kube/config.js'
import type { KubeRegistrySettings } from './registry/kube/config.js'
import { DEFAULT_DENIAL_LIMITS } from './audit/denial-limiter.js'
import type { DenialLimits } from './audit/denial-limiter.js'
import {
  AUTHZ_SCHEMA_PROPERTIES,
  IDENTITY_SCHEMA_PROPERTIES,
  parseAuthzMode,
  parseIdentitySettings,
} from './auth/identity-config.js'
import type { AuthzModeSettings, IdentitySettings } from './auth/identity-config.js'

/**
 * Asymmetric JWS algorithms we accept (never `none`, never HMAC:
 * docs/security.md#token-verification).
 */
export const ALLOWED_JWT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const

/** One authorization rule: who may port-forward where. */
export interface AuthzRule {
  users: string[]
  groups: string[]
  /** Namespace names or `*`. */
  namespaces: string[]
  /** Pod name glob patterns (`*` and `?`). */
  pods: string[]
  /** Service name globs a forward may name (`svc/NAME`); none by default. */
  services: string[]
  /** Workloads a forward may name, `KIND/NAME-GLOB` (`deployment/web-*`; KIND may be `*`); none by default. */
  workloads: string[]
  /** TCP port ranges, inclusive. */
  ports: { from: number; to: number }[]
  /** UDP port ranges, inclusive (docs/udp.md): none unless listed, whatever `ports` says. */
  udpPorts: { from: number; to: number }[]
}

/** An audit sink's configuration. */
export type AuditSinkConfig =
  | {
      type: 'file'
      path: string
      fsync: 'always' | 'interval' | 'never'
      fsyncIntervalMs: number
      maxSizeBytes: number
      maxFiles: number
      /** The denials trail beside it (`audit.denied.log`): its own size and retention. */
      denialsMaxSizeBytes: number
      denialsMaxFiles: number
    }
  | { type: 'stdout' }
  | {
      type: 'webhook'
      url: string
      spoolDir: string
      batchSize: number
      timeoutMs: number
      tokenFile?: string
      caFile?: string
      maxSpoolBytes: number
    }

/** Gateway configuration, fully defaulted. */
export interface GatewayConfig {
  listen: { host: string; port: number }
  tls: { cert: string; key: string }
  /** Metrics listener (plain HTTP, separate port); port 0 picks one; null disables. */
  metrics: { host: string; port: number } | null
  agents: {
    /** CA that issued the agents' serving certificates. */
    ca: string
    /** The gateway's client certificate for the agent hop. */
    cert: string
    key: string
    connectTimeoutMs: number
    keepaliveMs: number
    /**
     * How streams reach agents: the gateway dials them (`dial`), they dial the gateway's
     * agent endpoint (`reverse`), or a connected agent first and a dial otherwise (`both`).
     */
    mode: 'dial' | 'reverse' | 'both'
    /** The agent endpoint reverse agents dial (docs/scaling.md); null unless a mode uses it. */
    reverse: {
      host: string
      port: number
      /** The endpoint's certificate (default: the agent-hop certificate `cert`/`key`). */
      cert: string
      key: string
      /** Replicas an agent should hold a connection to (the Deployment's replicas). */
      replicas: number
      handshakeTimeoutMs: number
      /**
       * /readyz is false while fewer agents than this are connected (capped at the number
       * of nodes the registry knows): a replica that holds no agent would only fail streams.
       */
      readyMinAgents: number
    } | null
  }
  /** The other replicas, for one admin view (docs/scaling.md); null: this replica alone. */
  peers: {
    urls: string[]
    /** A headless Service's DNS name and port: each address is a peer. */
    dns: { name: string; port: number } | undefined
    /** CA of the peers' serving certificates (default: none, the system's). */
    ca: string | undefined
    serverName: string | undefined
    timeoutMs: number
  } | null
  registry: { source: 'static'; file: string } | KubeRegistrySettings
  auth: {
    /** The static JWKS source's issuer (with `audience` and `jwks`; all three or none). */
    issuer: string
    audience: string[]
    jwks?:
      | { file: string }
      | {
          url: string
          timeoutMs: number
          cacheMaxAgeMs: number
          /** Least time between two fetches (an unknown `kid` refetches after it). */
          minRefreshIntervalMs: number
          caFile?: string
        }
    algorithms: string[]
    clockToleranceS: number
    usernameClaim: string
    usernamePrefix: string
    groupsClaim: string
    groupsPrefix: string
    /** OIDC discovery issuers, client certificates, TokenReview (src/gateway/auth/identity-config.ts). */
    sources?: IdentitySettings
  }
  authorization: {
    rules: AuthzRule[]
    admins: { users: string[]; groups: string[] }
  } & AuthzModeSettings
  limits: {
    streamsPerConnection: number
    streamsPerUser: number
    streamOpenTimeoutMs: number
    /** 0 disables. */
    idleTimeoutMs: number
    /** 0 disables. */
    maxLifetimeMs: number
    maxHeaderBytes: number
    /**
     * SETTINGS_MAX_CONCURRENT_STREAMS on an HTTP/2 connection until one of its requests
     * has authenticated (then streamsPerConnection + this).
     */
    unauthenticatedStreams: number
    /** Connections from one source address (IPv6: its /64) that have authenticated nothing; 0 disables. */
    connectionsPerSource: number
    /** How long any request other than a forwarded connection may stay open. */
    requestTimeoutMs: number
    /** How long a client may take to complete its TLS handshake. */
    handshakeTimeoutMs: number
    /** PING interval for client HTTP/2 and upgraded connections; unanswered for this long ends them. 0 disables. */
    clientKeepaliveMs: number
    /** Bytes the relayed streams may hold in the gateway's buffers, all together. */
    bufferBudgetBytes: number
    /** UDP flows (docs/udp.md). */
    udp: {
      /** Concurrent UDP flows of one user. */
      flowsPerUser: number
      /** A flow without a datagram either way ends after this (0: never). */
      idleTimeoutMs: number
      /** The same for flows to port 53 (DNS). */
      dnsIdleTimeoutMs: number
    }
  }
  audit: {
    mode: 'blocking-strict' | 'blocking' | 'batch'
    sinks: AuditSinkConfig[]
    /** Blocking modes: how long records other than `stream.opened` may wait to share a write. */
    lingerMs: number
    /** The flood budget for refusals (docs/audit.md, "Denial floods"). */
    denials: DenialLimits
  }
  /** The Kubernetes-compatible surface (kubectl and client libraries). */
  kubernetes: {
    /**
     * Accept the SPDY-over-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31's
     * default). When false it is refused with a non-101 answer and kubectl falls back to
     * the plain SPDY upgrade (docs/kubernetes-clients.md).
     */
    websocketTunnel: boolean
  }
  shutdownGraceMs: number
  logLevel: string
}

const duration = { type: ['string', 'number'] } as const
const size = { type: ['string', 'number'] } as const
const stringList = { type: 'array', items: { type: 'string', minLength: 1 } } as const

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['tls', 'agents', 'registry', 'auth'],
  properties: {
    listen: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 8443 },
      },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['cert', 'key'],
      properties: { cert: { type: 'string' }, key: { type: 'string' } },
    },
    metrics: {
      type: ['object', 'null'],
      additionalProperties: false,
      default: {},
      properties: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 9464 },
      },
    },
    agents: {
      type: 'object',
      additionalProperties: false,
      required: ['ca', 'cert', 'key'],
      properties: {
        ca: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        connectTimeout: { ...duration, default: '5s' },
        keepalive: { ...duration, default: '30s' },
        mode: { enum: ['dial', 'reverse', 'both'], default: 'dial' },
        reverse: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            host: { type: 'string', default: '0.0.0.0' },
            port: { type: 'integer', minimum: 0, maximum: 65535, default: 8132 },
            cert: { type: 'string' },
            key: { type: 'string' },
            replicas: { type: 'integer', minimum: 1, maximum: 1024, default: 1 },
            handshakeTimeout: { ...duration, default: '10s' },
            readyMinAgents: { type: 'integer', minimum: 0, default: 1 },
          },
        },
      },
    },
    peers: {
      type: ['object', 'null'],
      additionalProperties: false,
      default: null,
      properties: {
        urls: { type: 'array', items: { type: 'string', pattern: '^https://' }, default: [] },
        dns: {
          type: 'object',
          additionalProperties: false,
          required: ['name', 'port'],
          properties: {
            name: { type: 'string', minLength: 1 },
            port: { type: 'integer', minimum: 1, maximum: 65535 },
          },
        },
        caFile: { type: 'string' },
        serverName: { type: 'string', minLength: 1 },
        timeout: { ...duration, default: '3s' },
      },
    },
    registry: {
      type: 'object',
      required: ['source'],
      properties: {
        source: { enum: ['static', 'kubernetes'] },
      },
      if: { properties: { source: { const: 'static' } } },
      then: {
        additionalProperties: false,
        required: ['file'],
        properties: { source: { const: 'static' }, file: { type: 'string' } },
      },
      else: KUBE_REGISTRY_CONFIG_SCHEMA,
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      // The static JWKS source is optional, but whole: issuer, audience and jwks together.
      dependencies: {
        issuer: ['audience', 'jwks'],
        audience: ['issuer', 'jwks'],
        jwks: ['issuer', 'audience'],
      },
      properties: {
        ...IDENTITY_SCHEMA_PROPERTIES,
        issuer: { type: 'string', minLength: 1 },
        audience: {
          anyOf: [
            { type: 'string', minLength: 1 },
            { ...stringList, minItems: 1 },
          ],
        },
        jwks: {
          type: 'object',
          additionalProperties: false,
          properties: {
            file: { type: 'string' },
            url: { type: 'string', pattern: '^https?://' },
            timeout: { ...duration, default: '5s' },
            cacheMaxAge: { ...duration, default: '10m' },
            minRefreshInterval: { ...duration, default: '30s' },
            caFile: { type: 'string' },
          },
          oneOf: [{ required: ['file'] }, { required: ['url'] }],
        },
        algorithms: {
          type: 'array',
          minItems: 1,
          items: { enum: [...ALLOWED_JWT_ALGORITHMS] },
          default: ['ES256', 'RS256', 'EdDSA'],
        },
        clockTolerance: { ...duration, default: '60s' },
        usernameClaim: { type: 'string', default: 'sub' },
        usernamePrefix: { type: 'string', default: '' },
        groupsClaim: { type: 'string', default: 'groups' },
        groupsPrefix: { type: 'string', default: '' },
      },
    },
    authorization: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        ...AUTHZ_SCHEMA_PROPERTIES,
        rules: {
          type: 'array',
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            properties: {
              users: { ...stringList, default: [] },
              groups: { ...stringList, default: [] },
              namespaces: { ...stringList, minItems: 1 },
              pods: { ...stringList, default: ['*'] },
              services: { ...stringList, default: [] },
              workloads: {
                type: 'array',
                default: [],
                items: {
                  type: 'string',
                  pattern: '^(\\*|deployment|replicaset|statefulset)/[^/]+$',
                },
              },
              ports: {
                type: 'array',
                default: ['1-65535'],
                items: {
                  anyOf: [
                    { type: 'integer', minimum: 1, maximum: 65535 },
                    { type: 'string', pattern: '^[1-9][0-9]{0,4}(-[1-9][0-9]{0,4})?$' },
                  ],
                },
              },
              udpPorts: {
                type: 'array',
                default: [],
                items: {
                  anyOf: [
                    { type: 'integer', minimum: 1, maximum: 65535 },
                    { type: 'string', pattern: '^[1-9][0-9]{0,4}(-[1-9][0-9]{0,4})?$' },
                  ],
                },
              },
            },
            required: ['namespaces'],
            anyOf: [
              { required: ['users'], properties: { users: { type: 'array', minItems: 1 } } },
              { required: ['groups'], properties: { groups: { type: 'array', minItems: 1 } } },
            ],
          },
        },
        admins: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            users: { ...stringList, default: [] },
            groups: { ...stringList, default: [] },
          },
        },
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        streamsPerConnection: { type: 'integer', minimum: 1, default: 20000 },
        streamsPerUser: { type: 'integer', minimum: 1, default: 50000 },
        streamOpenTimeout: { ...duration, default: '15s' },
        idleTimeout: { ...duration, default: 0 },
        maxLifetime: { ...duration, default: 0 },
        maxHeaderSize: { ...size, default: '16KiB' },
        unauthenticatedStreams: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
        connectionsPerSource: { type: 'integer', minimum: 0, default: 32 },
        requestTimeout: { ...duration, default: '30s' },
        handshakeTimeout: { ...duration, default: '10s' },
        clientKeepalive: { ...duration, default: '30s' },
        bufferBudget: { ...size, default: '256MiB' },
        udp: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            flowsPerUser: { type: 'integer', minimum: 1, default: 1000 },
            idleTimeout: { ...duration, default: '60s' },
            dnsIdleTimeout: { ...duration, default: '10s' },
          },
        },
      },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        mode: { enum: ['blocking-strict', 'blocking', 'batch'], default: 'blocking-strict' },
        linger: { ...duration, default: '10ms' },
        denials: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            rate: { type: 'number', exclusiveMinimum: 0, default: DEFAULT_DENIAL_LIMITS.rate },
            burst: { type: 'integer', minimum: 1, default: DEFAULT_DENIAL_LIMITS.burst },
            totalRate: {
              type: 'number',
              exclusiveMinimum: 0,
              default: DEFAULT_DENIAL_LIMITS.totalRate,
            },
            totalBurst: { type: 'integer', minimum: 1, default: DEFAULT_DENIAL_LIMITS.totalBurst },
            summaryInterval: { ...duration, default: '10s' },
          },
        },
        sinks: {
          type: 'array',
          default: [{ type: 'file', path: 'audit/audit.log' }],
          items: {
            type: 'object',
            required: ['type'],
            properties: { type: { enum: ['file', 'stdout', 'webhook'] } },
            allOf: [
              {
                if: { properties: { type: { const: 'file' } } },
                then: {
                  additionalProperties: false,
                  required: ['path'],
                  properties: {
                    type: { const: 'file' },
                    path: { type: 'string' },
                    fsync: { enum: ['always', 'interval', 'never'], default: 'always' },
                    fsyncInterval: { ...duration, default: '1s' },
                    maxSize: { ...size, default: '100MiB' },
                    maxFiles: { type: 'integer', minimum: 0, default: DEFAULT_AUDIT_RETENTION },
                    denialsMaxSize: { ...size, default: '100MiB' },
                    denialsMaxFiles: { type: 'integer', minimum: 0, default: 5 },
                  },
                },
              },
              {
                if: { properties: { type: { const: 'stdout' } } },
                then: { additionalProperties: false, properties: { type: { const: 'stdout' } } },
              },
              {
                if: { properties: { type: { const: 'webhook' } } },
                then: {
                  additionalProperties: false,
                  required: ['url', 'spoolDir'],
                  properties: {
                    type: { const: 'webhook' },
                    url: { type: 'string', pattern: '^https?://' },
                    spoolDir: { type: 'string' },
                    batchSize: {
                      type: 'integer',
                      minimum: 1,
                      default: DEFAULT_WEBHOOK_BATCH_RECORDS,
                    },
                    timeout: { ...duration, default: DEFAULT_WEBHOOK_TIMEOUT_MS },
                    tokenFile: { type: 'string' },
                    caFile: { type: 'string' },
                    maxSpoolSize: { ...size, default: DEFAULT_SPOOL_MAX_BYTES },
                  },
                },
              },
            ],
          },
        },
      },
    },
    kubernetes: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        websocketTunnel: { type: 'boolean', default: true },
      },
    },
    shutdownGrace: { ...duration, default: '10s' },
    logLevel: {
      enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
      default: 'info',
    },
  },
} as const

/** The config as ajv leaves it: validated, every default filled in. */
type Raw = FromSchema<typeof schema, { parseIfThenElseKeywords: true }>

function parsePortRange(value: number | string, where: string): { from: number; to: number } {
  if (typeof value === 'number') return { from: value, to: value }
  const [a, b] = value.split('-')
  const from = Number(a)
  const to = b === undefined ? from : Number(b)
  if (!(from >= 1 && to <= 65535 && from <= to)) {
    throw appError(
      'PFG_ERR_CONFIG_INVALID',
      `${where}: invalid port range ${JSON.stringify(value)}`,
    )
  }
  return { from, to }
}

function parseSink(s: Raw['audit']['sinks'][number], base: string, where: string): AuditSinkConfig {
  const p = (v: string): string => resolve(base, v)
  switch (s.type) {
    case 'file':
      return {
        type: 'file',
        path: p(s.path),
        fsync: s.fsync,
        fsyncIntervalMs: parseDuration(s.fsyncInterval, `${where}.fsyncInterval`),
        maxSizeBytes: parseSize(s.maxSize, `${where}.maxSize`),
        maxFiles: s.maxFiles,
        denialsMaxSizeBytes: parseSize(s.denialsMaxSize, `${where}.denialsMaxSize`),
        denialsMaxFiles: s.denialsMaxFiles,
      }
    case 'stdout':
      return { type: 'stdout' }
    case 'webhook': {
      const sink: AuditSinkConfig = {
        type: 'webhook',
        url: s.url,
        spoolDir: p(s.spoolDir),
        batchSize: s.batchSize,
        timeoutMs: parseDuration(s.timeout, `${where}.timeout`),
        maxSpoolBytes: parseSize(s.maxSpoolSize, `${where}.maxSpoolSize`),
      }
      if (typeof s.tokenFile === 'string') sink.tokenFile = p(s.tokenFile)
      if (typeof s.caFile === 'string') sink.caFile = p(s.caFile)
      return sink
    }
  }
}

/** Validates a parsed config object; relative paths resolve against `baseDir`. */
export function parseGatewayConfig(value: unknown, source: string, baseDir: string): GatewayConfig {
  const raw = validateConfig<Raw>(schema, value, source)
  const p = (v: string): string => resolve(baseDir, v)
  const jwks = raw.auth.jwks
  let registry: GatewayConfig['registry']
  if (raw.registry.source === 'static') {
    registry = { source: 'static', file: p(raw.registry.file) }
  } else {
    registry = parseKubeRegistryConfig((value as { registry: unknown }).registry, source, baseDir)
  }
  const config: GatewayConfig = {
    listen: { ...raw.listen },
    tls: { cert: p(raw.tls.cert), key: p(raw.tls.key) },
    metrics: raw.metrics === null ? null : { ...raw.metrics },
    agents: {
      ca: p(raw.agents.ca),
      cert: p(raw.agents.cert),
      key: p(raw.agents.key),
      connectTimeoutMs: parseDuration(raw.agents.connectTimeout, 'agents.connectTimeout'),
      keepaliveMs: parseDuration(raw.agents.keepalive, 'agents.keepalive'),
      mode: raw.agents.mode,
      reverse:
        raw.agents.mode === 'dial'
          ? null
          : {
              host: raw.agents.reverse.host,
              port: raw.agents.reverse.port,
              cert: p(raw.agents.reverse.cert ?? raw.agents.cert),
              key: p(raw.agents.reverse.key ?? raw.agents.key),
              replicas: raw.agents.reverse.replicas,
              handshakeTimeoutMs: parseDuration(
                raw.agents.reverse.handshakeTimeout,
                'agents.reverse.handshakeTimeout',
              ),
              readyMinAgents: raw.agents.reverse.readyMinAgents,
            },
    },
    peers:
      raw.peers === null
        ? null
        : {
            urls: [...raw.peers.urls],
            dns: raw.peers.dns === undefined ? undefined : { ...raw.peers.dns },
            ca: raw.peers.caFile === undefined ? undefined : p(raw.peers.caFile),
            serverName: raw.peers.serverName,
            timeoutMs: parseDuration(raw.peers.timeout, 'peers.timeout'),
          },
    registry,
    auth: {
      issuer: raw.auth.issuer ?? '',
      audience:
        raw.auth.audience === undefined
          ? []
          : Array.isArray(raw.auth.audience)
            ? [...raw.auth.audience]
            : [raw.auth.audience],
      ...(jwks === undefined
        ? {}
        : {
            jwks:
              jwks.file !== undefined
                ? { file: p(jwks.file) }
                : {
                    url: jwks.url as string,
                    timeoutMs: parseDuration(jwks.timeout, 'auth.jwks.timeout'),
                    cacheMaxAgeMs: parseDuration(jwks.cacheMaxAge, 'auth.jwks.cacheMaxAge'),
                    minRefreshIntervalMs: parseDuration(
                      jwks.minRefreshInterval,
                      'auth.jwks.minRefreshInterval',
                    ),
                    ...(jwks.caFile !== undefined ? { caFile: p(jwks.caFile) } : {}),
                  },
          }),
      algorithms: [...raw.auth.algorithms],
      clockToleranceS: parseDuration(raw.auth.clockTolerance, 'auth.clockTolerance') / 1000,
      usernameClaim: raw.auth.usernameClaim,
      usernamePrefix: raw.auth.usernamePrefix,
      groupsClaim: raw.auth.groupsClaim,
      groupsPrefix: raw.auth.groupsPrefix,
      sources: parseIdentitySettings(raw.auth, raw.auth, p),
    },
    authorization: {
      rules: raw.authorization.rules.map((r, i) => ({
        users: [...r.users],
        groups: [...r.groups],
        namespaces: [...r.namespaces],
        pods: [...r.pods],
        services: [...r.services],
        workloads: [...r.workloads],
        ports: r.ports.map((v) => parsePortRange(v, `authorization.rules.${i}.ports`)),
        udpPorts: r.udpPorts.map((v) => parsePortRange(v, `authorization.rules.${i}.udpPorts`)),
      })),
      admins: {
        users: [...raw.authorization.admins.users],
        groups: [...raw.authorization.admins.groups],
      },
      ...parseAuthzMode(raw.authorization, p),
    },
    limits: {
      streamsPerConnection: raw.limits.streamsPerConnection,
      streamsPerUser: raw.limits.streamsPerUser,
      streamOpenTimeoutMs: parseDuration(raw.limits.streamOpenTimeout, 'limits.streamOpenTimeout'),
      idleTimeoutMs: parseDuration(raw.limits.idleTimeout, 'limits.idleTimeout'),
      maxLifetimeMs: parseDuration(raw.limits.maxLifetime, 'limits.maxLifetime'),
      maxHeaderBytes: parseSize(raw.limits.maxHeaderSize, 'limits.maxHeaderSize'),
      unauthenticatedStreams: raw.limits.unauthenticatedStreams,
      connectionsPerSource: raw.limits.connectionsPerSource,
      requestTimeoutMs: parseDuration(raw.limits.requestTimeout, 'limits.requestTimeout'),
      handshakeTimeoutMs: parseDuration(raw.limits.handshakeTimeout, 'limits.handshakeTimeout'),
      clientKeepaliveMs: parseDuration(raw.limits.clientKeepalive, 'limits.clientKeepalive'),
      bufferBudgetBytes: parseSize(raw.limits.bufferBudget, 'limits.bufferBudget'),
      udp: {
        flowsPerUser: raw.limits.udp.flowsPerUser,
        idleTimeoutMs: parseDuration(raw.limits.udp.idleTimeout, 'limits.udp.idleTimeout'),
        dnsIdleTimeoutMs: parseDuration(raw.limits.udp.dnsIdleTimeout, 'limits.udp.dnsIdleTimeout'),
      },
    },
    audit: {
      mode: raw.audit.mode,
      sinks: raw.audit.sinks.map((s, i) => parseSink(s, baseDir, `audit.sinks.${i}`)),
      lingerMs: parseDuration(raw.audit.linger, 'audit.linger'),
      denials: {
        rate: raw.audit.denials.rate,
        burst: raw.audit.denials.burst,
        totalRate: raw.audit.denials.totalRate,
        totalBurst: raw.audit.denials.totalBurst,
        summaryIntervalMs: parseDuration(
          raw.audit.denials.summaryInterval,
          'audit.denials.summaryInterval',
        ),
      },
    },
    kubernetes: { websocketTunnel: raw.kubernetes.websocketTunnel },
    shutdownGraceMs: parseDuration(raw.shutdownGrace, 'shutdownGrace'),
    logLevel: raw.logLevel,
  }
  checkLimits(config.limits, source)
  checkAuth(config.auth, source)
  return Object.freeze(config)
}

/** Limits that only make sense together. */
function checkLimits(l: GatewayConfig['limits'], source: string): void {
  const problems: string[] = []
  // A native stream's deadline runs from its HEADERS, through its open, until its 200.
  if (l.requestTimeoutMs <= l.streamOpenTimeoutMs) {
    problems.push(
      `limits.requestTimeout (${l.requestTimeoutMs} ms) must be longer than limits.streamOpenTimeout (${l.streamOpenTimeoutMs} ms)`,
    )
  }
  for (const [key, ms] of [
    ['requestTimeout', l.requestTimeoutMs],
    ['handshakeTimeout', l.handshakeTimeoutMs],
  ] as const) {
    if (ms <= 0) problems.push(`limits.${key} must be more than 0`)
  }
  if (l.bufferBudgetBytes < 16 * 1024 * 1024)
    problems.push('limits.bufferBudget must be at least 16MiB')
  if (problems.length > 0) {
    throw appError(
      'PFG_ERR_CONFIG_INVALID',
      `${source}: invalid configuration:\n  - ${problems.join('\n  - ')}`,
    )
  }
}

/** At least one identity source, and each issuer once. */
function checkAuth(a: GatewayConfig['auth'], source: string): void {
  const problems: string[] = []
  if (
    a.jwks === undefined &&
    (a.sources?.oidc.length ?? 0) === 0 &&
    a.sources?.clientCertificates === undefined &&
    a.sources?.tokenReview === undefined
  ) {
    problems.push(
      'auth: no identity source (configure issuer/audience/jwks, oidc, clientCertificates or tokenReview)',
    )
  }
  const issuers = [
    ...(a.jwks !== undefined ? [a.issuer] : []),
    ...(a.sources?.oidc ?? []).map((o) => o.issuer),
  ]
  for (const dup of issuers.filter((x, i) => issuers.indexOf(x) !== i))
    problems.push(`auth: issuer ${dup} is configured twice`)
  if (problems.length > 0) {
    throw appError(
      'PFG_ERR_CONFIG_INVALID',
      `${source}: invalid configuration:\n  - ${problems.join('\n  - ')}`,
    )
  }
}

/** Loads and validates a gateway config file. */
export function loadGatewayConfig(path: string): GatewayConfig {
  return parseGatewayConfig(readYamlFile(path), path, dirname(resolve(path)))
}
