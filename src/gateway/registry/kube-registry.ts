/**
 * The `kubernetes` registry source: pod placement and agent addresses learnt from
 * the Kubernetes API by list + watch of pods and nodes (what client-go's
 * reflector does), kept as a small in-memory view the gateway reads synchronously.
 *
 * Per resource (pods of all namespaces or of each configured namespace; nodes):
 * a paginated list (`limit`/`continue`) gives a snapshot and its resourceVersion,
 * then a watch from that version streams ADDED/MODIFIED/DELETED/BOOKMARK/ERROR
 * events as newline-delimited JSON. A watch that ends (server timeout) or breaks
 * (network) resumes from the last resourceVersion seen; `410 Gone`/`Expired`
 * (the version was compacted) forces a relist, whose diff against the view is
 * emitted as events, so consumers never miss a change. Only the fields the
 * gateway needs are kept (PodInfo/NodeInfo), never whole objects.
 *
 * HTTP goes through a dedicated undici Pool carrying the cluster CA and the
 * client certificate or bearer token; the global dispatcher is never touched.
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { isIP } from 'node:net'
import { resolve as resolvePath } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool } from 'undici'
import type { Dispatcher } from 'undici'
import { Backoff } from '../../shared/backoff.js'
import { parseDuration, parseSize, validateConfig } from '../../shared/config.js'
import { AppError, appError, describeError, errorCode } from '../../shared/errors.js'
import { silentLogger } from '../../shared/log.js'
import type { Logger } from '../../shared/log.js'
import {
  BearerTokenSource,
  loadInClusterCredentials,
  loadKubeconfigCredentials,
} from './kube-credentials.js'
import type { KubeCredentials } from './kube-credentials.js'
import type {
  ContainerPort,
  NodeInfo,
  PodInfo,
  PodRegistry,
  RegistryEvents,
  ServiceInfo,
  WorkloadInfo,
  WorkloadKind,
} from './types.js'
import { sameObject, serviceInfoFromObject, workloadInfoFromObject } from './kube-objects.js'

// ───────────────────────────── annotations ─────────────────────────────

/** Node annotation overriding the agent port for that node (a decimal 1..65535). */
export const NODE_AGENT_PORT_ANNOTATION = 'pfgate.io/agent-port'

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

// ───────────────────────────── object mapping ─────────────────────────────

type Obj = Record<string, unknown>

function rec(v: unknown): Obj | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined
}

function stringMap(v: unknown): Record<string, string> | undefined {
  const r = rec(v)
  if (r === undefined) return undefined
  const out: Record<string, string> = {}
  let any = false
  for (const [k, val] of Object.entries(r)) {
    if (typeof val === 'string') {
      out[k] = val
      any = true
    }
  }
  return any ? out : undefined
}

function containerPorts(containers: unknown, out: ContainerPort[], sidecarsOnly: boolean): void {
  if (!Array.isArray(containers)) return
  for (const c of containers) {
    const container = rec(c)
    if (container === undefined || !Array.isArray(container.ports)) continue
    // Init containers only run beside the app when they are native sidecars (restartPolicy Always).
    if (sidecarsOnly && container.restartPolicy !== 'Always') continue
    for (const p of container.ports) {
      const port = rec(p)
      const n = port?.containerPort
      if (port === undefined || typeof n !== 'number' || !Number.isInteger(n)) continue
      if (n < 1 || n > 65535) continue
      const proto = port.protocol === 'UDP' || port.protocol === 'SCTP' ? port.protocol : 'TCP'
      const name = str(port.name)
      out.push(
        name !== undefined && name !== ''
          ? { name, containerPort: n, protocol: proto }
          : {
              containerPort: n,
              protocol: proto,
            },
      )
    }
  }
}

/**
 * The fields the gateway needs from a Pod object (API JSON), or undefined when it
 * has no namespace/name. New objects only: nothing of the input is retained.
 */
export function podInfoFromObject(value: unknown): PodInfo | undefined {
  const obj = rec(value)
  const meta = rec(obj?.metadata)
  const namespace = str(meta?.namespace)
  const name = str(meta?.name)
  if (obj === undefined || meta === undefined || !namespace || !name) return undefined
  const spec = rec(obj.spec)
  const status = rec(obj.status)
  const ports: ContainerPort[] = []
  containerPorts(spec?.containers, ports, false)
  containerPorts(spec?.initContainers, ports, true)
  const pod: PodInfo = {
    namespace,
    name,
    uid: str(meta.uid) ?? '',
    nodeName: str(spec?.nodeName) ?? '',
    phase: str(status?.phase) ?? 'Unknown',
    ports,
  }
  const labels = stringMap(meta.labels)
  if (labels !== undefined) pod.labels = labels
  const created = str(meta.creationTimestamp)
  if (created !== undefined) pod.creationTimestamp = created
  const conditions = Array.isArray(status?.conditions) ? (status.conditions as unknown[]) : []
  const ready = conditions.map(rec).find((c) => str(c?.type) === 'Ready')
  if (ready !== undefined) pod.ready = str(ready.status) === 'True'
  return pod
}

const ADDRESS_PREFERENCE = ['InternalDNS', 'Hostname', 'InternalIP'] as const

/**
 * The agent address of a Node object (API JSON): the first of its
 * `status.addresses` of type InternalDNS, Hostname, InternalIP (in that order of
 * preference), else the node name; port from {@link NODE_AGENT_PORT_ANNOTATION}
 * or `agentPort`; TLS server name = the address when it is a DNS name, else the
 * node name. Undefined when the object has no name.
 */
export function nodeInfoFromObject(value: unknown, agentPort: number): NodeInfo | undefined {
  const obj = rec(value)
  const meta = rec(obj?.metadata)
  const name = str(meta?.name)
  if (obj === undefined || meta === undefined || !name) return undefined
  const addresses = rec(obj.status)?.addresses
  let address: string | undefined
  if (Array.isArray(addresses)) {
    for (const type of ADDRESS_PREFERENCE) {
      for (const a of addresses) {
        const entry = rec(a)
        const addr = str(entry?.address)
        if (entry?.type === type && addr !== undefined && addr !== '') {
          address = addr
          break
        }
      }
      if (address !== undefined) break
    }
  }
  address ??= name
  let port = agentPort
  const override = str(rec(meta.annotations)?.[NODE_AGENT_PORT_ANNOTATION])
  if (override !== undefined && /^\d{1,5}$/.test(override.trim())) {
    const n = Number(override.trim())
    if (n >= 1 && n <= 65535) port = n
  }
  return { name, address, port, tlsServerName: isIP(address) === 0 ? address : name }
}

function samePod(a: PodInfo, b: PodInfo): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

function sameNode(a: NodeInfo, b: NodeInfo): boolean {
  return (
    a.address === b.address &&
    a.port === b.port &&
    a.tlsServerName === b.tlsServerName &&
    a.name === b.name
  )
}

// ───────────────────────────── watch stream framing ─────────────────────────────

/**
 * Splits a byte stream into newline-terminated lines (the watch wire format:
 * one JSON event per line, split across chunks at arbitrary byte offsets).
 * Decodes only whole lines, so multi-byte UTF-8 characters split by a chunk
 * boundary survive. A line longer than `maxLineBytes` throws a RangeError.
 */
export class LineSplitter {
  readonly #max: number
  #parts: Buffer[] = []
  #size = 0

  constructor(maxLineBytes: number) {
    this.#max = maxLineBytes
  }

  /** Bytes of an unfinished line held back. */
  get pending(): number {
    return this.#size
  }

  /** Feeds a chunk; returns the lines it completed (without `\n` or `\r`; blank lines dropped). */
  push(chunk: Uint8Array): string[] {
    const buf = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)
    const lines: string[] = []
    let start = 0
    for (;;) {
      const nl = buf.indexOf(0x0a, start)
      if (nl === -1) break
      const piece = buf.subarray(start, nl)
      this.#check(piece.length)
      const whole = this.#size === 0 ? piece : Buffer.concat([...this.#parts, piece])
      this.#parts = []
      this.#size = 0
      const line = whole.toString('utf8').replace(/\r$/, '')
      if (line.trim() !== '') lines.push(line)
      start = nl + 1
    }
    if (start < buf.length) {
      const rest = buf.subarray(start)
      this.#check(rest.length)
      // Copy: holding a view would pin the whole chunk in memory.
      this.#parts.push(Buffer.from(rest))
      this.#size += rest.length
    }
    return lines
  }

  #check(extra: number): void {
    if (this.#size + extra > this.#max) {
      this.#parts = []
      this.#size = 0
      throw new RangeError(`watch event longer than ${this.#max} bytes`)
    }
  }
}

// ───────────────────────────── errors ─────────────────────────────

/**
 * A failed API request or an ERROR watch event. Coded `PFG_ERR_CONFIG_INVALID`
 * when the API server refused our credentials (401/403: fix the config or the
 * RBAC), `PFG_ERR_ROUTE_NOT_READY` otherwise (the view cannot be loaded yet).
 */
export class KubeApiError extends AppError {
  /** The API server's HTTP status (or the ERROR event's `code`). */
  readonly apiStatus: number
  /** The Status `reason` (`Expired`, `Unauthorized`, `Forbidden`...), or ''. */
  readonly reason: string

  constructor(apiStatus: number, reason: string, message: string) {
    super(
      apiStatus === 401 || apiStatus === 403 ? 'PFG_ERR_CONFIG_INVALID' : 'PFG_ERR_ROUTE_NOT_READY',
      message,
    )
    this.name = 'KubeApiError'
    this.apiStatus = apiStatus
    this.reason = reason
  }
}

function isGone(err: unknown): boolean {
  return err instanceof KubeApiError && err.apiStatus === 410
}

/** A watch that must be replaced by a relist (undecodable event, an ERROR other than 410). */
class RelistNeeded extends Error {}

// ───────────────────────────── the registry ─────────────────────────────

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

/** A point-in-time view of the registry's health, for /readyz and logs. */
export interface KubeRegistryStatus {
  ready: boolean
  /** The most recent failure, if any since start (cleared by nothing: it is history). */
  lastError?: { code: string; message: string; at: string }
  resources: { path: string; synced: boolean; resourceVersion: string; items: number }[]
  /** Services and workloads (forward targets): they do not gate `ready`. */
  targets?: {
    synced: boolean
    lastError?: { code: string; message: string; at: string }
    resources: { path: string; synced: boolean; resourceVersion: string; items: number }[]
  }
}

/** The collections of forward targets a Kubernetes registry lists and watches. */
type TargetCollection = 'Service' | WorkloadKind
const TARGET_COLLECTIONS: readonly TargetCollection[] = [
  'Service',
  'Deployment',
  'ReplicaSet',
  'StatefulSet',
]

interface Resource<T> {
  /** API path of the collection, e.g. `/api/v1/pods`. */
  path: string
  labelSelector?: string
  map: (obj: unknown) => T | undefined
  key: (item: T) => string
  same: (a: T, b: T) => boolean
  /** An identity beyond the key (pod UID): a change means delete + add, not modify. */
  identity?: (item: T) => string
  emit: (type: 'added' | 'modified' | 'deleted', item: T) => void
}

/** A watch that lasted less than this and brought nothing is treated as a failure (backoff). */
const MIN_HEALTHY_WATCH_MS = 1000
/** How much of an error response body is read for its Status message. */
const MAX_ERROR_BODY = 64 * 1024

/** Everything a reflector needs from its registry. */
interface ReflectorHost {
  readonly signal: AbortSignal
  readonly settings: Required<Omit<KubeRegistryOptions, 'credentials' | 'logger' | 'labelSelector'>>
  readonly logger: Logger
  /** GET `path?query`; `watchMs` is the watch's duration for a watch, undefined for a list. */
  request(path: string, query: URLSearchParams, watchMs?: number): Promise<Dispatcher.ResponseData>
  onSynced(): void
  onError(path: string, err: unknown, attempt: number): void
}

/** One collection's list + watch loop and its part of the view. */
class Reflector<T> {
  readonly items = new Map<string, T>()
  readonly resource: Resource<T>
  resourceVersion = ''
  synced = false
  readonly #host: ReflectorHost
  #lastListAt = 0
  readonly #backoff: Backoff

  constructor(host: ReflectorHost, resource: Resource<T>) {
    this.#host = host
    this.resource = resource
    this.#backoff = new Backoff({ ...host.settings.backoff, random: host.settings.random })
  }

  /** Runs until the registry aborts. Never rejects. */
  async run(): Promise<void> {
    const { signal } = this.#host
    let needList = true
    let goneStreak = 0
    while (!signal.aborted) {
      // Set once the current watch has delivered an event: it was a working watch.
      const watchState = { healthy: false }
      try {
        if (needList) {
          await this.#list()
          needList = false
          this.#backoff.reset()
          if (!this.synced) {
            this.synced = true
            this.#host.onSynced()
          }
        }
        const started = Date.now()
        const result = await this.#watch(watchState)
        if (result === 'expired') {
          this.#host.logger.info({ path: this.resource.path }, 'watch expired (410): relisting')
          needList = true
          // A relist straight after a 410 is the normal recovery; only repeats back off.
          if (goneStreak++ === 0) continue
        } else {
          // The server ended the watch (timeoutSeconds): resume from the last version.
          goneStreak = 0
          const resync = this.#host.settings.resyncPeriodMs
          if (resync > 0 && Date.now() - this.#lastListAt >= resync) needList = true
          if (watchState.healthy || Date.now() - started >= MIN_HEALTHY_WATCH_MS) {
            this.#backoff.reset()
            continue
          }
          // An empty watch closed at once: the server is unwell; do not spin.
        }
      } catch (err) {
        if (signal.aborted) break
        if (watchState.healthy) {
          this.#backoff.reset()
          goneStreak = 0
        }
        this.#host.onError(this.resource.path, err, this.#backoff.attempt + 1)
        if (isGone(err)) {
          // 410 on a list: its continue token expired; start the list over.
          needList = true
          if (goneStreak++ === 0) continue
        } else if (err instanceof RelistNeeded || err instanceof RangeError) {
          needList = true
        }
        // Anything else (network, timeouts, 401/403/429/5xx): retry the same step,
        // a watch resuming from the last resourceVersion seen.
      }
      try {
        await sleep(this.#backoff.next(), undefined, { signal })
      } catch {
        break // aborted
      }
    }
  }

  async #list(): Promise<void> {
    const { path, labelSelector } = this.resource
    const fresh = new Map<string, T>()
    let cont = ''
    let rv: string
    do {
      const q = new URLSearchParams({ limit: String(this.#host.settings.pageSize) })
      if (cont !== '') q.set('continue', cont)
      if (labelSelector !== undefined) q.set('labelSelector', labelSelector)
      const res = await this.#host.request(path, q)
      const body = rec(await res.body.json())
      const meta = rec(body?.metadata)
      const items = body?.items
      if (body === undefined || meta === undefined || !Array.isArray(items)) {
        throw new KubeApiError(502, '', `GET ${path}: the list response is not a List object`)
      }
      for (const obj of items) {
        const item = this.resource.map(obj)
        if (item !== undefined) fresh.set(this.resource.key(item), item)
      }
      rv = str(meta.resourceVersion) ?? ''
      cont = str(meta.continue) ?? ''
    } while (cont !== '')
    this.#replace(fresh)
    this.resourceVersion = rv
    this.#lastListAt = Date.now()
  }

  /** Replaces the view with a fresh list and emits the difference. */
  #replace(fresh: Map<string, T>): void {
    for (const [key, old] of this.items) {
      if (!fresh.has(key)) {
        this.items.delete(key)
        this.resource.emit('deleted', old)
      }
    }
    for (const item of fresh.values()) this.#upsert(item)
  }

  #upsert(item: T): void {
    const key = this.resource.key(item)
    const old = this.items.get(key)
    this.items.set(key, item)
    if (old === undefined) {
      this.resource.emit('added', item)
    } else if (
      this.resource.identity !== undefined &&
      this.resource.identity(old) !== this.resource.identity(item)
    ) {
      // Same name, another object (deleted and re-created while we were not watching).
      this.resource.emit('deleted', old)
      this.resource.emit('added', item)
    } else if (!this.resource.same(old, item)) {
      this.resource.emit('modified', item)
    }
  }

  #remove(item: T): void {
    const key = this.resource.key(item)
    const old = this.items.get(key)
    if (old === undefined) return
    const id = this.resource.identity
    // A late DELETED for an older incarnation must not remove the current one.
    if (id !== undefined && id(item) !== '' && id(old) !== '' && id(old) !== id(item)) return
    this.items.delete(key)
    this.resource.emit('deleted', item)
  }

  async #watch(state: { healthy: boolean }): Promise<'expired' | 'ended'> {
    const { path, labelSelector } = this.resource
    const { watchTimeoutMs, random, maxEventBytes } = this.#host.settings
    const timeoutSeconds = Math.max(1, Math.floor((watchTimeoutMs / 1000) * (1 + random())))
    const q = new URLSearchParams({
      watch: '1',
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
    })
    if (labelSelector !== undefined) q.set('labelSelector', labelSelector)
    let res: Dispatcher.ResponseData
    try {
      res = await this.#host.request(path, q, timeoutSeconds * 1000)
    } catch (err) {
      if (isGone(err)) return 'expired'
      throw err
    }
    const splitter = new LineSplitter(maxEventBytes)
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        for (const line of splitter.push(chunk)) {
          if (this.#onEvent(line) === 'expired') return 'expired'
          state.healthy = true
        }
      }
    } finally {
      // Returning early (410) leaves the body unread: release the connection.
      if (!res.body.destroyed) res.body.destroy()
    }
    if (splitter.pending > 0) {
      throw new Error(`watch ${path} ended inside an event (${splitter.pending} bytes)`)
    }
    return 'ended'
  }

  /** Applies one watch event; 'expired' asks for a relist. */
  #onEvent(line: string): 'expired' | undefined {
    let event: Obj | undefined
    try {
      event = rec(JSON.parse(line))
    } catch {
      event = undefined
    }
    const object = rec(event?.object)
    if (event === undefined || object === undefined) {
      throw new RelistNeeded(`watch ${this.resource.path}: undecodable event`)
    }
    const type = event.type
    const rv = str(rec(object.metadata)?.resourceVersion)
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const item = this.resource.map(object)
        if (item !== undefined) {
          if (type === 'DELETED') this.#remove(item)
          else this.#upsert(item)
        }
        if (rv !== undefined && rv !== '') this.resourceVersion = rv
        return undefined
      }
      case 'BOOKMARK':
        if (rv !== undefined && rv !== '') this.resourceVersion = rv
        return undefined
      case 'ERROR': {
        const code = typeof object.code === 'number' ? object.code : 0
        if (code === 410) return 'expired'
        throw new RelistNeeded(
          `watch ${this.resource.path}: ERROR ${code} ${str(object.reason) ?? ''}: ${str(object.message) ?? ''}`,
        )
      }
      default:
        this.#host.logger.debug({ path: this.resource.path, type }, 'ignoring unknown watch event')
        return undefined
    }
  }
}

/**
 * A {@link PodRegistry} fed by the Kubernetes API. Lookups read an in-memory view;
 * `start()` resolves once pods and nodes have both been listed.
 */
export class KubeRegistry implements PodRegistry {
  readonly #creds: KubeCredentials
  readonly #host: ReflectorHost
  readonly #events = new EventEmitter()
  readonly #abort = new AbortController()
  readonly #tokens: BearerTokenSource
  readonly #podReflectors = new Map<string, Reflector<PodInfo>>()
  readonly #allNamespaces: Reflector<PodInfo> | undefined
  readonly #nodes: Reflector<NodeInfo>
  /**
   * Services and apps/v1 workloads (forward targets), per namespace or cluster-wide. They do
   * not gate readiness: pods forward while they sync, and a gateway whose RBAC predates
   * them keeps working for pods (forwards to a service then get 503 until they sync).
   */
  readonly #targets: {
    kind: TargetCollection
    ns: string | undefined
    r: Reflector<ServiceInfo | WorkloadInfo>
  }[] = []
  #targetsError: KubeRegistryStatus['lastError']
  readonly #basePath: string
  readonly #logger: Logger
  #pool: Pool | undefined
  #loops: Promise<void>[] = []
  #ready = false
  #closed = false
  #closing: Promise<void> | undefined
  #started: Promise<void> | undefined
  #settleStart: { resolve: () => void; reject: (err: Error) => void } | undefined
  #lastError: KubeRegistryStatus['lastError']

  constructor(options: KubeRegistryOptions) {
    if (
      !Number.isInteger(options.agentPort) ||
      options.agentPort < 1 ||
      options.agentPort > 65535
    ) {
      throw new RangeError(`agentPort must be 1..65535, got ${options.agentPort}`)
    }
    this.#creds = options.credentials
    const url = new URL(options.credentials.server)
    this.#basePath = url.pathname.replace(/\/+$/, '')
    this.#logger = options.logger ?? silentLogger()
    this.#tokens = new BearerTokenSource({
      ...(options.credentials.token !== undefined ? { token: options.credentials.token } : {}),
      ...(options.credentials.tokenFile !== undefined
        ? { tokenFile: options.credentials.tokenFile }
        : {}),
      refreshMs: options.tokenRefreshMs ?? parseDuration(DEFAULT_TOKEN_REFRESH),
    })
    const settings: ReflectorHost['settings'] = {
      agentPort: options.agentPort,
      namespaces: options.namespaces ?? [],
      pageSize: options.pageSize ?? DEFAULT_PAGE_SIZE,
      watchTimeoutMs: options.watchTimeoutMs ?? parseDuration(DEFAULT_WATCH_TIMEOUT),
      requestTimeoutMs: options.requestTimeoutMs ?? parseDuration(DEFAULT_REQUEST_TIMEOUT),
      resyncPeriodMs: options.resyncPeriodMs ?? DEFAULT_RESYNC_PERIOD,
      tokenRefreshMs: options.tokenRefreshMs ?? parseDuration(DEFAULT_TOKEN_REFRESH),
      backoff: options.backoff ?? {
        initialMs: parseDuration(DEFAULT_BACKOFF.initial),
        maxMs: parseDuration(DEFAULT_BACKOFF.max),
      },
      maxEventBytes: options.maxEventBytes ?? parseSize(DEFAULT_MAX_EVENT_SIZE),
      random: options.random ?? Math.random,
    }
    this.#host = {
      signal: this.#abort.signal,
      settings,
      logger: this.#logger,
      request: (path, query, watchMs) => this.#request(path, query, watchMs),
      onSynced: () => this.#checkReady(),
      onError: (path, err, attempt) => this.#onError(path, err, attempt),
    }
    const podResource = (path: string): Resource<PodInfo> => ({
      path,
      ...(options.labelSelector !== undefined ? { labelSelector: options.labelSelector } : {}),
      map: podInfoFromObject,
      key: (p) => `${p.namespace}/${p.name}`,
      same: samePod,
      identity: (p) => p.uid,
      emit: (type, pod) => this.#emit('pod', type, pod),
    })
    const namespaces = [...new Set(settings.namespaces)]
    if (namespaces.length === 0) {
      this.#allNamespaces = new Reflector(this.#host, podResource('/api/v1/pods'))
    } else {
      for (const ns of namespaces) {
        const path = `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`
        this.#podReflectors.set(ns, new Reflector(this.#host, podResource(path)))
      }
    }
    this.#nodes = new Reflector(this.#host, {
      path: '/api/v1/nodes',
      map: (obj) => nodeInfoFromObject(obj, options.agentPort),
      key: (n) => n.name,
      same: sameNode,
      emit: (type, node) => this.#emit('node', type, node),
    })
    const targetHost: ReflectorHost = {
      ...this.#host,
      onSynced: () => undefined,
      onError: (path, err, attempt) => {
        this.#targetsError = {
          code: errorCode(err) ?? 'ERROR',
          message: describeError(err),
          at: new Date().toISOString(),
        }
        this.#logger.warn(
          { path, attempt, err: describeError(err) },
          'kubernetes list/watch of services/workloads failed; retrying',
        )
      },
    }
    for (const ns of namespaces.length === 0 ? [undefined] : namespaces) {
      for (const kind of TARGET_COLLECTIONS) {
        const base = kind === 'Service' ? '/api/v1' : '/apis/apps/v1'
        const plural = `${kind.toLowerCase()}s`
        const path =
          ns === undefined
            ? `${base}/${plural}`
            : `${base}/namespaces/${encodeURIComponent(ns)}/${plural}`
        this.#targets.push({
          kind,
          ns,
          r: new Reflector<ServiceInfo | WorkloadInfo>(targetHost, {
            path,
            map: (obj) =>
              kind === 'Service' ? serviceInfoFromObject(obj) : workloadInfoFromObject(kind, obj),
            key: (o) => `${o.namespace}/${o.name}`,
            same: sameObject,
            emit: () => undefined,
          }),
        })
      }
    }
  }

  #target(
    kind: TargetCollection,
    namespace: string,
    name: string,
  ): ServiceInfo | WorkloadInfo | undefined {
    for (const t of this.#targets) {
      if (t.kind === kind && (t.ns === undefined || t.ns === namespace))
        return t.r.items.get(`${namespace}/${name}`)
    }
    return undefined
  }

  /** True once services and workloads have been listed (every collection). */
  targetsReady(): boolean {
    return this.#targets.every((t) => t.r.synced)
  }

  #reflectors(): Reflector<PodInfo | NodeInfo>[] {
    const pods =
      this.#allNamespaces !== undefined ? [this.#allNamespaces] : [...this.#podReflectors.values()]
    return [...pods, this.#nodes] as Reflector<PodInfo | NodeInfo>[]
  }

  getPod(namespace: string, name: string): PodInfo | undefined {
    const r = this.#allNamespaces ?? this.#podReflectors.get(namespace)
    return r?.items.get(`${namespace}/${name}`)
  }

  getNode(name: string): NodeInfo | undefined {
    return this.#nodes.items.get(name)
  }

  listPods(): PodInfo[] {
    const out: PodInfo[] = []
    const pods =
      this.#allNamespaces !== undefined ? [this.#allNamespaces] : this.#podReflectors.values()
    for (const r of pods) out.push(...r.items.values())
    return out
  }

  getService(namespace: string, name: string): ServiceInfo | undefined {
    return this.#target('Service', namespace, name) as ServiceInfo | undefined
  }

  getWorkload(kind: WorkloadKind, namespace: string, name: string): WorkloadInfo | undefined {
    return this.#target(kind, namespace, name) as WorkloadInfo | undefined
  }

  /** Every node of the view. */
  listNodes(): NodeInfo[] {
    return [...this.#nodes.items.values()]
  }

  isReady(): boolean {
    return this.#ready
  }

  /** Health details: last failure, per-collection sync state and resourceVersion. */
  status(): KubeRegistryStatus {
    return {
      ready: this.#ready,
      ...(this.#lastError !== undefined ? { lastError: { ...this.#lastError } } : {}),
      resources: this.#reflectors().map((r) => ({
        path: r.resource.path,
        synced: r.synced,
        resourceVersion: r.resourceVersion,
        items: r.items.size,
      })),
      targets: {
        synced: this.targetsReady(),
        ...(this.#targetsError !== undefined ? { lastError: { ...this.#targetsError } } : {}),
        resources: this.#targets.map(({ r }) => ({
          path: r.resource.path,
          synced: r.synced,
          resourceVersion: r.resourceVersion,
          items: r.items.size,
        })),
      },
    }
  }

  /**
   * Starts the list + watch loops. Resolves once pods and nodes are both listed;
   * failures are retried with backoff meanwhile (see {@link status}). Rejects only
   * if {@link close} comes first. Idempotent.
   */
  start(): Promise<void> {
    if (this.#closed) return Promise.reject(appError('PFG_ERR_ROUTE_NOT_READY', 'registry closed'))
    if (this.#started !== undefined) return this.#started
    this.#started = new Promise<void>((resolve, reject) => {
      this.#settleStart = { resolve, reject }
    })
    const c = this.#creds
    const url = new URL(c.server)
    this.#pool = new Pool(url.origin, {
      // One connection per long-lived watch, plus room for a list beside it.
      connections: this.#reflectors().length + this.#targets.length + 2,
      connect: {
        ...(c.ca !== undefined ? { ca: c.ca } : {}),
        ...(c.cert !== undefined ? { cert: c.cert } : {}),
        ...(c.key !== undefined ? { key: c.key } : {}),
        ...(c.tlsServerName !== undefined ? { servername: c.tlsServerName } : {}),
        rejectUnauthorized: !c.insecureSkipTlsVerify,
      },
    })
    this.#logger.info(
      {
        credentials: c.source,
        server: url.origin,
        namespaces: this.#allNamespaces !== undefined ? '*' : [...this.#podReflectors.keys()],
      },
      'kubernetes registry starting',
    )
    this.#loops = [
      ...this.#reflectors().map((r) => r.run()),
      ...this.#targets.map(({ r }) => r.run()),
    ]
    return this.#started
  }

  /** Stops the watches: aborts in-flight requests, closes every connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  async #close(): Promise<void> {
    this.#closed = true
    this.#abort.abort()
    await Promise.allSettled(this.#loops)
    if (this.#pool !== undefined) await this.#pool.destroy().catch(() => undefined)
    if (this.#settleStart !== undefined && !this.#ready) {
      const why = this.#lastError !== undefined ? `: last error: ${this.#lastError.message}` : ''
      this.#settleStart.reject(
        appError('PFG_ERR_ROUTE_NOT_READY', `registry closed before the first sync${why}`),
      )
    }
    this.#settleStart = undefined
    if (this.#ready) {
      this.#ready = false
      this.#emit('ready', false)
    }
  }

  on<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this {
    this.#events.on(event, listener)
    return this
  }

  off<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this {
    this.#events.off(event, listener)
    return this
  }

  #emit(event: keyof RegistryEvents, ...args: unknown[]): void {
    try {
      this.#events.emit(event, ...args)
    } catch (err) {
      // A listener's bug must not break the watch loop that called it.
      this.#logger.error({ event, err: describeError(err) }, 'registry listener threw')
    }
  }

  #checkReady(): void {
    if (this.#ready || this.#closed) return
    if (!this.#reflectors().every((r) => r.synced)) return
    this.#ready = true
    this.#logger.info(
      { pods: this.listPods().length, nodes: this.#nodes.items.size },
      'kubernetes registry synced',
    )
    this.#emit('ready', true)
    this.#settleStart?.resolve()
    this.#settleStart = undefined
  }

  #onError(path: string, err: unknown, attempt: number): void {
    const message = describeError(err)
    this.#lastError = {
      code: errorCode(err) ?? 'ERROR',
      message,
      at: new Date().toISOString(),
    }
    const level = isGone(err) ? 'info' : 'warn'
    this.#logger[level]({ path, attempt, err: message }, 'kubernetes list/watch failed; retrying')
  }

  async #request(
    path: string,
    query: URLSearchParams,
    watchMs?: number,
  ): Promise<Dispatcher.ResponseData> {
    const pool = this.#pool
    if (pool === undefined) throw new Error('registry not started')
    const token = await this.#tokens.get()
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': 'pfgate-gateway',
    }
    if (token !== undefined) headers.authorization = `Bearer ${token}`
    const { requestTimeoutMs } = this.#host.settings
    const res = await pool.request({
      method: 'GET',
      path: `${this.#basePath}${path}?${query.toString()}`,
      headers,
      signal: this.#abort.signal,
      headersTimeout: requestTimeoutMs,
      // A watch may stay quiet for its whole duration (bookmarks are best effort); past
      // that plus a margin the server should have ended it: the connection is dead.
      bodyTimeout: watchMs !== undefined ? watchMs + requestTimeoutMs : requestTimeoutMs,
    })
    if (res.statusCode === 200) return res
    throw await this.#apiError(res, path)
  }

  async #apiError(res: Dispatcher.ResponseData, path: string): Promise<KubeApiError> {
    let text = ''
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        text += chunk.toString('utf8')
        if (text.length > MAX_ERROR_BODY) break
      }
    } catch {
      // The status line is enough.
    } finally {
      if (!res.body.destroyed) res.body.destroy()
    }
    let status: Obj | undefined
    try {
      status = rec(JSON.parse(text))
    } catch {
      status = undefined
    }
    const code = res.statusCode
    const reason = str(status?.reason) ?? ''
    const detail = str(status?.message) ?? (text.slice(0, 200) || res.statusText || '')
    let message = `Kubernetes API GET ${path}: ${code} ${reason || res.statusText || ''}: ${detail}`
    if (code === 401) {
      this.#tokens.invalidate()
      message += ` (the API server rejected the gateway's credentials from ${this.#creds.source})`
    } else if (code === 403) {
      message +=
        ' (the gateway needs list and watch on pods and nodes: see deploy/kubernetes/rbac.yaml)'
    }
    return new KubeApiError(code, reason, message)
  }
}

/** Dependencies of {@link createKubeRegistry}. */
export interface KubeRegistryDeps {
  /** The environment (main.ts passes process.env), for in-cluster mode. */
  env: Readonly<Record<string, string | undefined>>
  logger?: Logger
  /** Service-account mount (tests point it at a temporary directory). */
  serviceAccountDir?: string
}

/**
 * Builds a {@link KubeRegistry} from validated settings: loads the credentials
 * (kubeconfig or in-cluster; throws `PFG_ERR_CONFIG_INVALID` if they are unusable).
 */
export function createKubeRegistry(
  settings: KubeRegistrySettings,
  deps: KubeRegistryDeps,
): KubeRegistry {
  const credentials =
    settings.kubeconfig !== undefined
      ? loadKubeconfigCredentials(settings.kubeconfig, settings.context)
      : loadInClusterCredentials({
          env: deps.env,
          ...(deps.serviceAccountDir !== undefined
            ? { serviceAccountDir: deps.serviceAccountDir }
            : {}),
        })
  return new KubeRegistry({
    credentials,
    agentPort: settings.agentPort,
    namespaces: settings.namespaces,
    ...(settings.labelSelector !== undefined ? { labelSelector: settings.labelSelector } : {}),
    pageSize: settings.pageSize,
    watchTimeoutMs: settings.watchTimeoutMs,
    requestTimeoutMs: settings.requestTimeoutMs,
    resyncPeriodMs: settings.resyncPeriodMs,
    tokenRefreshMs: settings.tokenRefreshMs,
    backoff: settings.backoff,
    maxEventBytes: settings.maxEventBytes,
    ...(deps.logger !== undefined ? { logger: deps.logger } : {}),
  })
}
