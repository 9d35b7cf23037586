/**
 * The network-namespace dialer: how the agent reaches a pod's port on a real node.
 *
 * A pod's port is only reachable inside the pod's network namespace. The kubelet and
 * containerd enter the namespace and dial `localhost:<port>` (IPv4, then IPv6); we do
 * the same without a process per connection: one long-lived helper (`netns-helper.ts`,
 * driven by `helper-process.ts`) per namespace, started with `nsenter --net=<path>`,
 * connects on request and passes the connected socket's descriptor back over the Node
 * IPC channel. The agent relays that socket directly, so the per-connection cost is
 * one IPC round trip, and no byte crosses the helper. After loopback the helper also
 * tries the pod's own IPs, so a server bound only to the pod IP is reachable.
 *
 * Which namespace: a {@link PodNetnsResolver} answers by the pod UID the gateway sent
 * (the container runtime over CRI, or the agent config's map); nothing in a request
 * names a path. Every path is checked to be a namespace (nsfs) and stat'ed before each
 * dial, and the helper reports the namespace it really entered, which must be the one
 * the agent stat'ed (`namespace-slot.ts`). See docs/netns-dialer.md.
 *
 * @module
 */
import type { Socket } from 'node:net'
import type { Socket as UdpSocket } from 'node:dgram'
import { fileURLToPath } from 'node:url'
import type { BackoffOptions } from '../shared/backoff.js'
import { appError, isAppError } from '../shared/errors.js'
import type { AppError } from '../shared/errors.js'
import { silentLogger } from '../shared/log.js'
import type { Logger } from '../shared/log.js'
import type { HelperSocket, NetnsDialerStats } from './helper-process.js'
import { NamespaceSlot } from './namespace-slot.js'
import type { DialControl, NetnsHelperInfo, SlotContext } from './namespace-slot.js'
import { assertNsfs, netnsError, readIdentity, sameIdentity } from './netns-handle.js'
import type { NsIdentity } from './netns-handle.js'
import type { PodNetns, PodNetnsResolver, ResolverReadiness } from './netns-resolver.js'
import type { DialOptions, PodDialer, PodTarget, PodUdpSocket } from './pod-dialer.js'
import { connectUdp } from './udp-connect.js'

/** Stop a helper after this long without dials (ms); 0 never stops it. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000
/** How often a live helper's namespace path is re-checked (deleted or replaced), ms. */
export const DEFAULT_CHECK_INTERVAL_MS = 2_000
/** How long a helper may take to start and report its namespace, ms. */
export const DEFAULT_START_TIMEOUT_MS = 10_000
/** Restart backoff after a helper dies or fails to start. */
export const DEFAULT_RESTART_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 10_000 }

/** Options for {@link NetnsDialer}. */
export interface NetnsDialerOptions {
  /** Where pods' namespaces come from, by pod UID: the runtime or the agent config. */
  resolver: PodNetnsResolver
  /** Stop a helper after this long without dials, ms (default 10 min; 0: never). */
  idleTimeoutMs?: number
  /** Re-check live helpers' namespace paths this often, ms (default 2 s). */
  checkIntervalMs?: number
  /** A helper must start and report within this, ms (default 10 s). */
  startTimeoutMs?: number
  /** Restart backoff (default 100 ms doubling to 10 s, with jitter). */
  restartBackoff?: BackoffOptions
  /** nsenter binary (default `nsenter` on PATH). */
  nsenterPath?: string
  /** node binary for helpers (default this process's). */
  nodePath?: string
  /** Helper script (default the compiled netns-helper.js beside this file). */
  helperPath?: string
  log?: Logger
}

const replaced = (path: string): AppError =>
  netnsError(path, 'the namespace was deleted or replaced')

/**
 * Dials pods inside their network namespaces through per-namespace helper processes.
 *
 * @example
 * ```ts
 * const dialer = new NetnsDialer({ resolver: new CriNetnsResolver() })
 * const socket = await dialer.dial({ namespace: 'default', name: 'echo', uid }, 5000, {
 *   signal: AbortSignal.timeout(10_000),
 *   timeoutMs: 5000,
 * })
 * ```
 */
export class NetnsDialer implements PodDialer {
  readonly #resolver: PodNetnsResolver
  readonly #slots = new Map<string, NamespaceSlot>()
  readonly #stopping = new Set<Promise<void>>()
  readonly #sockets = new Set<Socket>()
  readonly #udpSockets = new Set<UdpSocket>()
  readonly #ctx: SlotContext
  readonly #log: Logger
  readonly #stats: NetnsDialerStats = {
    dials: 0,
    connected: 0,
    helperStarts: 0,
    helperCrashes: 0,
    retries: 0,
    lateSocketsClosed: 0,
  }
  #closed = false

  constructor(options: NetnsDialerOptions) {
    this.#log = options.log ?? silentLogger()
    this.#resolver = options.resolver
    this.#ctx = {
      spec: {
        nsenterPath: options.nsenterPath ?? 'nsenter',
        nodePath: options.nodePath ?? process.execPath,
        helperPath:
          options.helperPath ?? fileURLToPath(new URL('./netns-helper.js', import.meta.url)),
        startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      },
      log: this.#log,
      stats: this.#stats,
      backoff: options.restartBackoff ?? DEFAULT_RESTART_BACKOFF,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      checkIntervalMs: options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS,
      retire: (slot, reason) => this.#retire(slot, reason),
    }
  }

  /** Live helpers, for diagnostics and tests. */
  helpers(): NetnsHelperInfo[] {
    return [...this.#slots.values()].map((s) => s.info())
  }

  /** A snapshot of the counters. */
  stats(): NetnsDialerStats {
    return { ...this.#stats }
  }

  /** Whether pods can be resolved now (the resolver's view: the runtime answers). */
  readiness(): Promise<ResolverReadiness> {
    if (this.#closed) return Promise.resolve({ ready: false, detail: 'the agent is shutting down' })
    return this.#resolver.readiness()
  }

  dial(target: PodTarget, port: number, options: DialOptions): Promise<Socket> {
    return this.#open(target, port, options, 'tcp') as Promise<Socket>
  }

  /**
   * Opens a UDP flow: the helper binds a UDP socket inside the pod's namespace, on the
   * address a UDP socket of the pod receives on, and the agent connects it to that address.
   */
  async dialUdp(target: PodTarget, port: number, options: DialOptions): Promise<PodUdpSocket> {
    const socket = (await this.#open(target, port, options, 'udp')) as UdpSocket & {
      pfgateAddress?: string
    }
    const address = socket.pfgateAddress ?? '127.0.0.1'
    this.#udpSockets.add(socket)
    socket.once('close', () => this.#udpSockets.delete(socket))
    socket.on('error', () => {}) // until the relay listens; errors end the flow there
    const connected = await connectUdp(socket, address, port, target, true)
    return { socket, address, port, connected }
  }

  #open(
    target: PodTarget,
    port: number,
    options: DialOptions,
    protocol: 'tcp' | 'udp',
  ): Promise<HelperSocket> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return Promise.reject(new RangeError(`port ${port} is not an integer in 1..65535`))
    }
    this.#stats.dials++
    const { signal, timeoutMs } = options
    const ctl: DialControl = { cancelled: false, stage: 'resolve', onCancel: undefined }
    const deadline = Date.now() + timeoutMs
    return new Promise<HelperSocket>((resolve, reject) => {
      let settled = false
      const cancel = (): void => {
        ctl.cancelled = true
        ctl.onCancel?.()
      }
      const finish = (err: Error | undefined, socket?: HelperSocket): void => {
        if (settled) {
          if (socket !== undefined) {
            if ('destroy' in socket) socket.destroy()
            else socket.close()
            this.#stats.lateSocketsClosed++
          }
          return
        }
        settled = true
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        if (err !== undefined) {
          reject(err)
          return
        }
        this.#stats.connected++
        if ('destroy' in socket!) {
          const tcp = socket
          this.#sockets.add(tcp)
          tcp.once('close', () => this.#sockets.delete(tcp))
        }
        resolve(socket!)
      }
      const onAbort = (): void => {
        cancel()
        finish(
          appError(
            'PFG_ERR_AGENT_CONNECT_FAILED',
            `error forwarding port ${port} to pod ${target.namespace}/${target.name}: dial cancelled`,
          ),
        )
      }
      const timer = setTimeout(() => {
        cancel()
        finish(this.#timeoutError(target, port, timeoutMs, ctl))
      }, timeoutMs)
      if (signal.aborted) {
        onAbort()
        return
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.#dial(target, port, deadline, ctl, protocol).then(
        (socket) => finish(undefined, socket),
        (err: Error) => finish(err),
      )
    })
  }

  /**
   * Ends every helper (waiting for the processes to exit), closes the sockets it
   * handed out, and closes the resolver.
   */
  async close(): Promise<void> {
    if (this.#closed) {
      while (this.#stopping.size > 0) await Promise.all([...this.#stopping])
      return
    }
    this.#closed = true
    const reason = appError('PFG_ERR_AGENT_CONNECT_FAILED', 'the agent is shutting down')
    for (const slot of [...this.#slots.values()]) this.#retire(slot, reason)
    for (const s of this.#sockets) s.destroy()
    this.#sockets.clear()
    for (const s of this.#udpSockets) s.close()
    this.#udpSockets.clear()
    while (this.#stopping.size > 0) await Promise.all([...this.#stopping])
    await this.#resolver.close()
  }

  async #dial(
    target: PodTarget,
    port: number,
    deadline: number,
    ctl: DialControl,
    protocol: 'tcp' | 'udp',
  ): Promise<HelperSocket> {
    if (this.#closed) {
      throw appError('PFG_ERR_AGENT_CONNECT_FAILED', 'the agent is shutting down')
    }
    const podKey = `${target.namespace}/${target.name}`
    const uid = target.uid
    if (uid === undefined || uid === '') {
      // Only a pod UID names a pod here: a name alone may be a newer pod than the gateway's.
      throw appError(
        'PFG_ERR_AGENT_POD_NOT_FOUND',
        `pod not found: ${podKey} (the request carries no pod UID)`,
      )
    }
    const netns = await this.#resolver.resolve({
      namespace: target.namespace,
      name: target.name,
      uid,
    })
    try {
      return await this.#dialIn(netns, podKey, port, deadline, ctl, protocol)
    } catch (err) {
      // Whatever failed, the next dial to this pod asks the resolver's source again.
      this.#resolver.invalidate(uid)
      throw err
    }
  }

  async #dialIn(
    netns: PodNetns,
    podKey: string,
    port: number,
    deadline: number,
    ctl: DialControl,
    protocol: 'tcp' | 'udp',
  ): Promise<HelperSocket> {
    const path = netns.path
    let identity: NsIdentity
    try {
      // The resolver's own stat of this resolve, or ours.
      identity = netns.identity ?? (await readIdentity(path))
    } catch (err) {
      // Deleted: end its helper now rather than at the next periodic check.
      const stale = this.#slots.get(path)
      if (stale !== undefined) this.#retire(stale, isAppError(err) ? err : replaced(path))
      throw err
    }
    if (ctl.cancelled) throw new Error('cancelled')
    let slot = this.#slots.get(path)
    if (slot !== undefined && !sameIdentity(slot.identity, identity)) {
      this.#retire(slot, replaced(path))
      slot = undefined
    }
    if (slot === undefined) {
      await assertNsfs(path)
      if (this.#closed) throw appError('PFG_ERR_AGENT_CONNECT_FAILED', 'the agent is shutting down')
      if (ctl.cancelled) throw new Error('cancelled')
      // Another dial may have created it while we awaited.
      slot = this.#slots.get(path)
      if (slot === undefined || !sameIdentity(slot.identity, identity)) {
        if (slot !== undefined) this.#retire(slot, replaced(path))
        slot = new NamespaceSlot(path, identity, this.#ctx)
        this.#slots.set(path, slot)
      }
    }
    slot.pods.add(podKey)
    return slot.dial(port, netns.podIps, deadline, ctl, protocol)
  }

  #timeoutError(target: PodTarget, port: number, timeoutMs: number, ctl: DialControl): AppError {
    const where = `pod ${target.namespace}/${target.name}`
    const what =
      ctl.stage === 'connect'
        ? `failed to connect to localhost:${port} inside the network namespace of ${where}: i/o timeout after ${timeoutMs} ms`
        : ctl.stage === 'start'
          ? `failed to execute portforward in the network namespace of ${where}: the namespace helper did not become ready within ${timeoutMs} ms`
          : `failed to execute portforward for ${where}: timed out after ${timeoutMs} ms`
    return appError('PFG_ERR_AGENT_CONNECT_TIMEOUT', what)
  }

  #retire(slot: NamespaceSlot, reason: AppError): void {
    if (slot.retired) return
    if (this.#slots.get(slot.path) === slot) this.#slots.delete(slot.path)
    const done = slot.retire(reason)
    this.#stopping.add(done)
    void done.then(() => this.#stopping.delete(done))
  }
}
