/**
 * The `kubernetes` registry source's configuration: defaults, the schema of the
 * `registry.kubernetes` section, its parsed settings and the registry's options.
 *
 * @module
 */
import { resolve as resolvePath } from 'node:path'
import { parseDuration, parseSize, validateConfig } from '../../../shared/config.js'
import { appError } from '../../../shared/errors.js'
import type { Logger } from '../../../shared/log.js'
import type { KubeCredentials } from '../kube-credentials.js'

// ───────────────────────────── configuration ─────────────────────────────

/** Default page size of list requests (`limit`), as client-go's pager. */
export const DEFAULT_PAGE_SIZE = 500
/** Default watch duration requested from the server (jittered up to 2×, as client-go does). */
export const DEFAULT_WATCH_TIMEOUT = '5m'
/** Default timeout of list requests (headers and idle body). */
export const DEFAULT_REQUEST_TIMEOUT = '30s'
/** Default period of full relists; 0 disables them (watches alone keep the view exact). */
export const DEFAULT_RESYNC_PERIOD = 0
/** Default re-read period of a bearer token file. */
export const DEFAULT_TOKEN_REFRESH = '1m'
/** Default reconnect backoff. */
export const DEFAULT_BACKOFF = { initial: '500ms', max: '30s' } as const
/** Default bound on one watch event line (the largest object etcd stores is ~1.5 MiB). */
export const DEFAULT_MAX_EVENT_SIZE = '16MiB'

/** The `registry:` section for `source: kubernetes`, as written in YAML. */
export interface KubeRegistryConfig {
  source: 'kubernetes'
  /** Path to a kubeconfig file (relative to the gateway config's directory). */
  kubeconfig?: string
  /** kubeconfig context to use (default: its current-context). Needs `kubeconfig`. */
  context?: string
  /** Use the pod's service account (default: true when `kubeconfig` is absent). */
  inCluster?: boolean
  /** Namespaces to watch pods in; empty (default) watches all namespaces. */
  namespaces?: string[]
  /** Only pods matching this label selector (e.g. `pfgate.io/forwardable=true`). */
  labelSelector?: string
  /** The agents' port on every node (a node may override it: {@link NODE_AGENT_PORT_ANNOTATION}). */
  agentPort: number
  /** List page size (default 500). */
  pageSize?: number
  /** Period of full relists; 0 (default) disables. Duration (`30m`) or ms. */
  resyncPeriod?: string | number
  /** Watch duration asked of the server, jittered up to 2× (default 5m). */
  watchTimeout?: string | number
  /** Timeout of list requests (default 30s). */
  requestTimeout?: string | number
  /** Token file re-read period (default 1m). */
  tokenRefresh?: string | number
  /** Reconnect backoff (defaults 500ms, 30s). */
  backoff?: { initial?: string | number; max?: string | number }
  /** Largest watch event accepted (default 16MiB). */
  maxEventSize?: string | number
}

/** The section after validation: defaults applied, durations in ms, sizes in bytes. */
export interface KubeRegistrySettings {
  source: 'kubernetes'
  /** Absolute path, when a kubeconfig is used. */
  kubeconfig?: string
  context?: string
  inCluster: boolean
  namespaces: string[]
  labelSelector?: string
  agentPort: number
  pageSize: number
  resyncPeriodMs: number
  watchTimeoutMs: number
  requestTimeoutMs: number
  tokenRefreshMs: number
  backoff: { initialMs: number; maxMs: number }
  maxEventBytes: number
}

const duration = { type: ['string', 'number'] } as const

/**
 * JSON schema of the `registry` section when `source` is `kubernetes` (ajv,
 * with `useDefaults`). The gateway schema can embed it under `registry`.
 */
export const KUBE_REGISTRY_CONFIG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['source', 'agentPort'],
  properties: {
    source: { const: 'kubernetes' },
    kubeconfig: { type: 'string', minLength: 1 },
    context: { type: 'string', minLength: 1 },
    inCluster: { type: 'boolean' },
    namespaces: {
      type: 'array',
      uniqueItems: true,
      default: [],
      items: { type: 'string', maxLength: 63, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' },
    },
    labelSelector: { type: 'string', minLength: 1 },
    agentPort: { type: 'integer', minimum: 1, maximum: 65535 },
    pageSize: { type: 'integer', minimum: 1, maximum: 10000, default: DEFAULT_PAGE_SIZE },
    resyncPeriod: { ...duration, default: DEFAULT_RESYNC_PERIOD },
    watchTimeout: { ...duration, default: DEFAULT_WATCH_TIMEOUT },
    requestTimeout: { ...duration, default: DEFAULT_REQUEST_TIMEOUT },
    tokenRefresh: { ...duration, default: DEFAULT_TOKEN_REFRESH },
    backoff: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        initial: { ...duration, default: DEFAULT_BACKOFF.initial },
        max: { ...duration, default: DEFAULT_BACKOFF.max },
      },
    },
    maxEventSize: { type: ['string', 'number'], default: DEFAULT_MAX_EVENT_SIZE },
  },
  dependencies: { context: ['kubeconfig'] },
} as const

const WRAPPED_SCHEMA = {
  type: 'object',
  required: ['registry'],
  properties: { registry: KUBE_REGISTRY_CONFIG_SCHEMA },
} as const

type RawSection = Required<Omit<KubeRegistryConfig, 'kubeconfig' | 'context' | 'labelSelector'>> &
  Pick<KubeRegistryConfig, 'kubeconfig' | 'context' | 'labelSelector'> & {
    backoff: { initial: string | number; max: string | number }
  }

/**
 * Validates a `registry` section (`source: kubernetes`) and resolves it: defaults,
 * durations in ms, the kubeconfig path against `baseDir`. Throws
 * `PFG_ERR_CONFIG_INVALID` listing every problem (`registry.<field>: ...`).
 */
export function parseKubeRegistryConfig(
  value: unknown,
  source: string,
  baseDir: string,
): KubeRegistrySettings {
  const raw = validateConfig<{ registry: RawSection }>(
    WRAPPED_SCHEMA,
    { registry: value },
    source,
  ).registry
  const problems: string[] = []
  const dur = (v: string | number, field: string): number => {
    try {
      return parseDuration(v, `registry.${field}`)
    } catch (err) {
      problems.push((err as Error).message)
      return 0
    }
  }
  if (raw.inCluster === true && raw.kubeconfig !== undefined) {
    problems.push('registry: inCluster and kubeconfig are exclusive; set one')
  }
  const settings: KubeRegistrySettings = {
    source: 'kubernetes',
    ...(raw.kubeconfig !== undefined ? { kubeconfig: resolvePath(baseDir, raw.kubeconfig) } : {}),
    ...(raw.context !== undefined ? { context: raw.context } : {}),
    inCluster: raw.inCluster ?? raw.kubeconfig === undefined,
    namespaces: [...raw.namespaces],
    ...(raw.labelSelector !== undefined ? { labelSelector: raw.labelSelector } : {}),
    agentPort: raw.agentPort,
    pageSize: raw.pageSize,
    resyncPeriodMs: dur(raw.resyncPeriod, 'resyncPeriod'),
    watchTimeoutMs: dur(raw.watchTimeout, 'watchTimeout'),
    requestTimeoutMs: dur(raw.requestTimeout, 'requestTimeout'),
    tokenRefreshMs: dur(raw.tokenRefresh, 'tokenRefresh'),
    backoff: {
      initialMs: dur(raw.backoff.initial, 'backoff.initial'),
      maxMs: dur(raw.backoff.max, 'backoff.max'),
    },
    maxEventBytes: 0,
  }
  try {
    settings.maxEventBytes = parseSize(raw.maxEventSize, 'registry.maxEventSize')
    if (settings.maxEventBytes < 64 * 1024) {
      problems.push('registry.maxEventSize: must be at least 64KiB')
    }
  } catch (err) {
    problems.push((err as Error).message)
  }
  if (settings.watchTimeoutMs < 1000) problems.push('registry.watchTimeout: must be at least 1s')
  if (settings.requestTimeoutMs < 100) {
    problems.push('registry.requestTimeout: must be at least 100ms')
  }
  if (settings.backoff.initialMs < 1)
    problems.push('registry.backoff.initial: must be at least 1ms')
  if (settings.backoff.maxMs < settings.backoff.initialMs) {
    problems.push('registry.backoff.max: must not be less than backoff.initial')
  }
  if (problems.length > 0) {
    throw appError(
      'PFG_ERR_CONFIG_INVALID',
      `${source}: invalid configuration:\n  - ${problems.join('\n  - ')}`,
    )
  }
  return Object.freeze(settings)
}

/** Options of {@link KubeRegistry}. */
export interface KubeRegistryOptions {
  credentials: KubeCredentials
  /** Agent port on every node unless annotated. */
  agentPort: number
  /** Watch pods in these namespaces only; empty or absent: all namespaces. */
  namespaces?: readonly string[]
  labelSelector?: string
  pageSize?: number
  watchTimeoutMs?: number
  requestTimeoutMs?: number
  /** Full relist period; 0 disables (default). Checked when a watch ends. */
  resyncPeriodMs?: number
  tokenRefreshMs?: number
  backoff?: { initialMs: number; maxMs: number }
  maxEventBytes?: number
  logger?: Logger
  /** Random source for backoff and watch-timeout jitter (tests inject one). */
  random?: () => number
}
