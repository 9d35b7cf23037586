/**
 * The node agent's configuration (YAML; example in config/agent-node-a.yaml).
 *
 * @module
 */
import { dirname, resolve } from 'node:path'
import type { FromSchema } from 'json-schema-to-ts'
import { parseDuration, readYamlFile, validateConfig } from '../shared/config.js'
import { appError } from '../shared/errors.js'
import { GATEWAY_IDENTITY_URI } from '../protocol/constants.js'
import type { StaticPodEntry } from './static-dialer.js'

/** Agent configuration, fully defaulted. Durations are in ms. */
export interface AgentConfig {
  /** This node's name (as the gateway's registry knows it). */
  nodeName: string
  /** The dial-in listener; null in reverse-only mode (nothing listens on the node). */
  listen: { host: string; port: number } | null
  /** Reverse mode: the agent dials the gateway's agent endpoint (docs/scaling.md). */
  reverse: ReverseConfig | null
  tls: {
    /** The agent's serving certificate and key (PEM files). */
    cert: string
    key: string
    /** CA that issued the gateway's client certificate. */
    clientCa: string
  }
  /** Client-certificate identities allowed to open streams (URI SAN or `CN=<name>`). */
  allowedClients: string[]
  dialer: {
    type: 'static' | 'netns'
    connectTimeoutMs: number
    /** netns: stop a namespace helper after this long unused. */
    helperIdleMs: number
    /**
     * netns: where a pod's namespace comes from, by pod UID: the container runtime
     * over CRI (`runtime`, real nodes) or `pods[].netns` of this config (`config`).
     */
    namespaces: 'runtime' | 'config'
  }
  /** The container runtime the netns dialer asks (CRI). */
  runtime: {
    /** CRI socket path; undefined: containerd's, else CRI-O's default socket. */
    endpoint: string | undefined
    /** Deadline of each CRI call. */
    timeoutMs: number
  }
  /** Pods on this node and how to reach them (static dialer, or `namespaces: config`). */
  pods: AgentPodEntry[]
  /** How long in-flight streams may drain on shutdown. */
  shutdownGraceMs: number
  logLevel: string
}

/** Reverse mode: where the gateway's agent endpoint is and how to keep connections to it. */
export interface ReverseConfig {
  /** `host:port` of the agent endpoint (a load balancer in front of every replica). */
  host: string
  port: number
  /** TLS server name sent (SNI); the gateway is verified by its identity (allowedClients). */
  serverName: string | undefined
  /** PING interval on each connection; unanswered for this long, the connection is dropped. */
  keepaliveMs: number
  /** Backoff between dials that failed or landed on a replica already connected. */
  backoffInitialMs: number
  backoffMaxMs: number
  /** A full set of connections is checked again this often (the replica count may grow). */
  resyncMs: number
}

/** One pod on this node. */
export interface AgentPodEntry extends StaticPodEntry {
  /** The pod's UID (required with `netns`: the agent resolves pods by UID). */
  uid?: string
  /** `namespaces: config`: a name under /run/netns or an absolute namespace path. */
  netns?: string
}

/** One entry of `pods`. */
const podEntrySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['namespace', 'name'],
  properties: {
    namespace: { type: 'string' },
    name: { type: 'string' },
    uid: { type: 'string', minLength: 1 },
    host: { type: 'string' },
    ports: {
      type: 'object',
      propertyNames: { pattern: '^[1-9][0-9]{0,4}$' },
      additionalProperties: { type: 'integer', minimum: 1, maximum: 65535 },
    },
    netns: { type: 'string' },
  },
} as const

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['nodeName', 'tls'],
  properties: {
    nodeName: { type: 'string', minLength: 1 },
    listen: {
      type: ['object', 'null'],
      additionalProperties: false,
      default: {},
      properties: {
        host: { type: 'string', default: '0.0.0.0' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 10250 },
      },
    },
    reverse: {
      type: 'object',
      additionalProperties: false,
      required: ['gateway'],
      properties: {
        gateway: { type: 'string', pattern: '^(\\[[0-9A-Fa-f:.]+\\]|[^:\\s/\\[\\]]+):[0-9]{1,5}$' },
        serverName: { type: 'string', minLength: 1 },
        keepalive: { type: ['string', 'number'], default: '15s' },
        backoffInitial: { type: ['string', 'number'], default: '200ms' },
        backoffMax: { type: ['string', 'number'], default: '15s' },
        resync: { type: ['string', 'number'], default: '30s' },
      },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['cert', 'key', 'clientCa'],
      properties: {
        cert: { type: 'string' },
        key: { type: 'string' },
        clientCa: { type: 'string' },
      },
    },
    allowedClients: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      minItems: 1,
      default: [GATEWAY_IDENTITY_URI],
    },
    dialer: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        type: { enum: ['static', 'netns'], default: 'static' },
        connectTimeout: { type: ['string', 'number'], default: '5s' },
        helperIdle: { type: ['string', 'number'], default: '10m' },
        namespaces: { enum: ['runtime', 'config'], default: 'runtime' },
      },
    },
    runtime: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        endpoint: { type: 'string', pattern: '^(unix://)?/' },
        timeout: { type: ['string', 'number'], default: '2s' },
      },
    },
    pods: { type: 'array', default: [], items: podEntrySchema },
    shutdownGrace: { type: ['string', 'number'], default: '10s' },
    logLevel: {
      enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
      default: 'info',
    },
  },
} as const

/** The config as ajv leaves it: validated, every default filled in. */
type RawAgentConfig = FromSchema<typeof schema>

/**
 * Namespaces come from one place: with `namespaces: runtime` a `pods[].netns` would be
 * ignored, so it is refused rather than silently unused; with `config`, each needs a uid.
 */
function checkNetnsEntries(raw: RawAgentConfig, source: string): void {
  const problems: string[] = []
  for (const [i, p] of raw.pods.entries()) {
    if (p.netns === undefined) continue
    if (raw.dialer.type !== 'netns' || raw.dialer.namespaces !== 'config') {
      problems.push(
        `pods[${i}].netns: only read with dialer.type netns and dialer.namespaces config (the container runtime names namespaces otherwise)`,
      )
    } else if (p.uid === undefined) {
      problems.push(`pods[${i}]: a uid is required with netns (pods are resolved by UID)`)
    }
  }
  if (problems.length > 0) {
    throw appError('PFG_ERR_CONFIG_INVALID', `${source}: ${problems.join('; ')}`)
  }
}

function parseReverse(r: NonNullable<RawAgentConfig['reverse']>, source: string): ReverseConfig {
  const cut = r.gateway.lastIndexOf(':')
  const host = r.gateway.slice(0, cut).replace(/^\[(.*)\]$/, '$1')
  const port = Number(r.gateway.slice(cut + 1))
  if (!(port >= 1 && port <= 65535)) {
    throw appError('PFG_ERR_CONFIG_INVALID', `${source}: reverse.gateway: invalid port`)
  }
  const initial = parseDuration(r.backoffInitial, 'reverse.backoffInitial')
  const max = parseDuration(r.backoffMax, 'reverse.backoffMax')
  if (initial <= 0 || max < initial) {
    throw appError(
      'PFG_ERR_CONFIG_INVALID',
      `${source}: reverse.backoffInitial must be more than 0 and at most reverse.backoffMax`,
    )
  }
  return {
    host,
    port,
    serverName: r.serverName,
    keepaliveMs: parseDuration(r.keepalive, 'reverse.keepalive'),
    backoffInitialMs: initial,
    backoffMaxMs: max,
    resyncMs: parseDuration(r.resync, 'reverse.resync'),
  }
}

/** Validates a parsed config object; relative file paths resolve against `baseDir`. */
export function parseAgentConfig(value: unknown, source: string, baseDir: string): AgentConfig {
  const raw = validateConfig<RawAgentConfig>(schema, value, source)
  checkNetnsEntries(raw, source)
  if (raw.listen === null && raw.reverse === undefined) {
    throw appError(
      'PFG_ERR_CONFIG_INVALID',
      `${source}: listen: null needs a reverse section (the agent would be unreachable)`,
    )
  }
  return Object.freeze({
    nodeName: raw.nodeName,
    listen: raw.listen === null ? null : { ...raw.listen },
    reverse: raw.reverse === undefined ? null : parseReverse(raw.reverse, source),
    tls: {
      cert: resolve(baseDir, raw.tls.cert),
      key: resolve(baseDir, raw.tls.key),
      clientCa: resolve(baseDir, raw.tls.clientCa),
    },
    allowedClients: [...raw.allowedClients],
    dialer: {
      type: raw.dialer.type,
      connectTimeoutMs: parseDuration(raw.dialer.connectTimeout, 'dialer.connectTimeout'),
      helperIdleMs: parseDuration(raw.dialer.helperIdle, 'dialer.helperIdle'),
      namespaces: raw.dialer.namespaces,
    },
    runtime: {
      endpoint: raw.runtime.endpoint,
      timeoutMs: parseDuration(raw.runtime.timeout, 'runtime.timeout'),
    },
    pods: raw.pods.map((p) => ({ ...p })),
    shutdownGraceMs: parseDuration(raw.shutdownGrace, 'shutdownGrace'),
    logLevel: raw.logLevel,
  })
}

/** Loads and validates an agent config file; `nodeName` (the --node-name flag) overrides the file's. */
export function loadAgentConfig(path: string, overrides: { nodeName?: string } = {}): AgentConfig {
  const value = readYamlFile(path)
  if (overrides.nodeName !== undefined && typeof value === 'object' && value !== null) {
    ;(value as { nodeName?: string }).nodeName = overrides.nodeName
  }
  return parseAgentConfig(value, path, dirname(resolve(path)))
}
