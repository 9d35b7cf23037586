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
import { Pool } from 'undici'
import type { Dispatcher } from 'undici'
import { parseDuration, parseSize } from '../../../shared/config.js'
import { appError, describeError, errorCode } from '../../../shared/errors.js'
import { silentLogger } from '../../../shared/log.js'
import type { Logger } from '../../../shared/log.js'
import {
  BearerTokenSource,
  loadInClusterCredentials,
  loadKubeconfigCredentials,
} from '../kube-credentials.js'
import type { KubeCredentials } from '../kube-credentials.js'
import type {
  NodeInfo,
  PodInfo,
  PodRegistry,
  RegistryEvents,
  ServiceInfo,
  WorkloadInfo,
  WorkloadKind,
} from '../types.js'
import { sameObject, serviceInfoFromObject, workloadInfoFromObject } from './targets.js'
import {
  DEFAULT_BACKOFF,
  DEFAULT_MAX_EVENT_SIZE,
  DEFAULT_PAGE_SIZE,
  DEFAULT_REQUEST_TIMEOUT,
  DEFAULT_RESYNC_PERIOD,
  DEFAULT_TOKEN_REFRESH,
  DEFAULT_WATCH_TIMEOUT,
} from './config.js'
import type { KubeRegistryOptions, KubeRegistrySettings } from './config.js'
import { nodeInfoFromObject, podInfoFromObject, rec, sameNode, samePod, str } from './objects.js'
import type { Obj } from './objects.js'
import { KubeApiError, isGone } from './api-error.js'
import { MAX_ERROR_BODY, Reflector } from './reflector.js'
import type { ReflectorHost, Resource } from './reflector.js'

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

  getService(namespace: string, name: string): ServiceInfo | undefined {
    return this.#target('Service', namespace, name) as ServiceInfo | undefined
  }

  getWorkload(kind: WorkloadKind, namespace: string, name: string): WorkloadInfo | undefined {
    return this.#target(kind, namespace, name) as WorkloadInfo | undefined
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
