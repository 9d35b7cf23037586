/**
 * The network-namespace dialer: how the agent reaches a pod's port on a real node.
 *
 * A pod's port is only reachable on the loopback of the pod's network namespace.
 * The kubelet/containerd enter the namespace and dial `localhost:<port>` (IPv4, then
 * IPv6); we do the same without a process per connection: one long-lived helper
 * (`netns-helper.ts`) per namespace, started with `nsenter --net=<path>`, connects
 * on request and passes the connected socket's descriptor back over the Node IPC
 * channel. The agent relays that socket directly, so the per-connection cost is one
 * IPC round trip, and no byte crosses the helper.
 *
 * Which namespace: the agent config's "namespace/pod" → handle map wins; a handle
 * sent with the request (from the gateway's registry) is used only when the config
 * has no entry, and then only if it is a `/run/netns/<name>` name or a
 * `/proc/<pid>/ns/net` path that is not the agent's own (host) namespace. Every
 * handle is checked to be a namespace (nsfs), and the helper reports the namespace
 * it really entered, which must be the one the agent stat'ed. See docs/netns-dialer.md.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { Socket } from 'node:net'
import { stat, statfs } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { Backoff } from '../shared/backoff.js'
import type { BackoffOptions } from '../shared/backoff.js'
import { AppError, appError, errorCode } from '../shared/errors.js'
import type { AppErrorCode } from '../shared/errors.js'
import { silentLogger } from '../shared/log.js'
import type { Logger } from '../shared/log.js'
import { isHelperMessage, MAX_HELPER_TIMEOUT_MS, MAX_REQUEST_ID } from './netns-helper.js'
import type { HelperAttemptError, HelperMessage, HelperRequest } from './netns-helper.js'
import type { DialOptions, PodDialer, PodTarget } from './pod-dialer.js'

/** Stop a helper after this long without dials (ms); 0 never stops it. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000
/** How often a live helper's namespace path is re-checked (deleted or replaced), ms. */
export const DEFAULT_CHECK_INTERVAL_MS = 2_000
/** How long a helper may take to start and report its namespace, ms. */
export const DEFAULT_START_TIMEOUT_MS = 10_000
/** Restart backoff after a helper dies or fails to start. */
export const DEFAULT_RESTART_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 10_000 }
/** A helper that lived this long before dying restarts from the initial backoff delay. */
const STABLE_UPTIME_MS = 10_000
/** Grace for a helper to exit after its IPC channel is closed before SIGKILL, ms. */
const STOP_GRACE_MS = 1_000
/** `statfs` f_type of the namespace filesystem (NSFS_MAGIC in linux/magic.h). */
const NSFS_MAGIC = 0x6e736673
/** Where `ip netns` keeps named namespaces. */
export const NETNS_RUN_DIR = '/run/netns'

const NAME = '[A-Za-z0-9_.-]{1,255}'
const NAME_RE = new RegExp(`^${NAME}$`)
const RUN_NETNS_RE = new RegExp(`^/(?:var/)?run/netns/${NAME}$`)
const PROC_NETNS_RE = /^\/proc\/[1-9][0-9]{0,9}\/ns\/net$/
const ABSOLUTE_RE = /^(?:\/[A-Za-z0-9_.-]{1,255}){1,32}$/

/** Where a handle came from: the agent's config (trusted) or the request (restricted). */
export type NetnsHandleSource = 'config' | 'request'

/**
 * Turns a namespace handle into the path to enter, or throws `PFG_ERR_AGENT_NETNS`.
 * Accepted: a name under /run/netns (`[A-Za-z0-9_.-]+`, not `.`/`..`),
 * `/run/netns/<name>` (or `/var/run/netns/<name>`), `/proc/<pid>/ns/net`; from the
 * config also any other absolute path without `.`/`..` segments (e.g. Docker's
 * `/var/run/docker/netns/<id>`).
 */
export function resolveNetnsHandle(handle: string, source: NetnsHandleSource): string {
  const bad = (why: string): AppError =>
    appError(
      'PFG_ERR_AGENT_NETNS',
      `failed to execute portforward in network namespace ${JSON.stringify(handle)}: ${why}`,
    )
  if (typeof handle !== 'string' || handle.length === 0 || handle.length > 4096) {
    throw bad('invalid namespace handle')
  }
  const dotSegment = handle.split('/').some((s) => s === '.' || s === '..')
  if (dotSegment) throw bad('invalid namespace handle (relative path segment)')
  if (NAME_RE.test(handle)) return `${NETNS_RUN_DIR}/${handle}`
  if (RUN_NETNS_RE.test(handle) || PROC_NETNS_RE.test(handle)) return handle
  if (source === 'config' && ABSOLUTE_RE.test(handle)) return handle
  throw bad(
    source === 'request'
      ? 'a namespace handle from the request must be a /run/netns name or /proc/<pid>/ns/net'
      : 'invalid namespace handle',
  )
}

/** A namespace's identity: the nsfs device and inode (what `stat -L` shows). */
interface NsIdentity {
  dev: number
  ino: number
}

const sameIdentity = (a: NsIdentity, b: NsIdentity): boolean => a.dev === b.dev && a.ino === b.ino

/** stat()s a handle path; a missing path is a deleted namespace. */
async function readIdentity(path: string): Promise<NsIdentity> {
  try {
    const st = await stat(path)
    return { dev: st.dev, ino: st.ino }
  } catch (err) {
    const code = errorCode(err)
    throw appError(
      'PFG_ERR_AGENT_NETNS',
      `failed to execute portforward in network namespace "${path}": ${
        code === 'ENOENT' ? 'the namespace does not exist (deleted?)' : `cannot stat it (${code})`
      }`,
      { cause: err },
    )
  }
}

/** Checks that a path is a namespace file (nsfs); the helper later proves it is a net one. */
async function assertNsfs(path: string): Promise<void> {
  let type: number
  try {
    type = Number((await statfs(path)).type)
  } catch (err) {
    throw appError(
      'PFG_ERR_AGENT_NETNS',
      `failed to execute portforward in network namespace "${path}": cannot statfs it (${errorCode(err)})`,
      { cause: err },
    )
  }
  if (type !== NSFS_MAGIC) {
    throw appError(
      'PFG_ERR_AGENT_NETNS',
      `failed to execute portforward in network namespace "${path}": not a namespace file`,
    )
  }
}

/** errno → the text Go prints for it, so messages read like the kubelet's. */
const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ENETUNREACH: 'network is unreachable',
  EHOSTUNREACH: 'no route to host',
  EADDRNOTAVAIL: 'cannot assign requested address',
  EAFNOSUPPORT: 'address family not supported by protocol',
  ECONNRESET: 'connection reset by peer',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EAGAIN: 'resource temporarily unavailable',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in system',
  ENOBUFS: 'no buffer space available',
}

/**
 * Builds the kubelet/containerd-style error for failed attempts, e.g.
 * `failed to connect to localhost:5000 inside namespace "/run/netns/x", IPv4: dial tcp4
 * 127.0.0.1:5000: connect: connection refused IPv6 dial tcp6 [::1]:5000: connect: connection refused`.
 * Code: a timeout wins, then a refusal, else `PFG_ERR_AGENT_CONNECT_FAILED`.
 */
export function connectError(
  path: string,
  port: number,
  errors: readonly HelperAttemptError[],
): AppError {
  const text = (e: HelperAttemptError | undefined): string => {
    if (e === undefined) return 'not attempted'
    const addr = e.family === 4 ? `tcp4 127.0.0.1:${port}` : `tcp6 [::1]:${port}`
    if (e.code === 'ETIMEDOUT') return `dial ${addr}: i/o timeout`
    return `dial ${addr}: connect: ${ERRNO_TEXT[e.code] ?? e.code.toLowerCase()}`
  }
  const v4 = errors.find((e) => e.family === 4)
  const v6 = errors.find((e) => e.family === 6)
  const code: AppErrorCode = errors.some((e) => e.code === 'ETIMEDOUT')
    ? 'PFG_ERR_AGENT_CONNECT_TIMEOUT'
    : errors.some((e) => e.code === 'ECONNREFUSED')
      ? 'PFG_ERR_AGENT_CONNECT_REFUSED'
      : 'PFG_ERR_AGENT_CONNECT_FAILED'
  return appError(
    code,
    `failed to connect to localhost:${port} inside namespace "${path}", IPv4: ${text(v4)} IPv6 ${text(v6)}`,
  )
}

/** Counters, for metrics and tests. */
export interface NetnsDialerStats {
  /** dial() calls. */
  dials: number
  /** Dials that resolved with a socket. */
  connected: number
  /** Helper processes spawned (first starts and restarts). */
  helperStarts: number
  /** Helpers that died without being asked to (crash, kill). */
  helperCrashes: number
  /** Dials re-sent to a restarted helper after their helper died. */
  retries: number
  /** Sockets that arrived after their dial was cancelled or timed out, and were closed. */
  lateSocketsClosed: number
}

/** One live helper, as {@link NetnsDialer.helpers} reports it. */
export interface NetnsHelperInfo {
  /** The namespace path it serves. */
  path: string
  /** Its process id (the helper node process; nsenter execs it). */
  pid: number | undefined
  state: 'starting' | 'ready' | 'waiting-restart'
  /** Pods ("namespace/pod") that dialled through it. */
  pods: string[]
}

/** Options for {@link NetnsDialer}. */
export interface NetnsDialerOptions {
  /** "namespace/pod" → namespace handle, from the agent config. Takes precedence over requests. */
  pods?: Iterable<readonly [string, string]>
  /** Use `PodTarget.netns` when the config has no entry for the pod (default true). */
  allowRequestNetns?: boolean
  /**
   * Accept a request-supplied handle that names the agent's own (host) namespace
   * (default false: it would expose the node's loopback services). Pods with
   * hostNetwork should be listed in the config instead.
   */
  allowHostNetns?: boolean
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

/** The helper died while a request was in flight (internal: decides the retry). */
class HelperGoneError extends Error {
  override name = 'HelperGoneError'
}

/** Cancellation state of one dial, shared by its steps. */
interface DialControl {
  cancelled: boolean
  stage: 'resolve' | 'start' | 'connect'
  /** Set while a request is in flight: forgets it so a late socket is closed. */
  onCancel: (() => void) | undefined
}

interface PendingRequest {
  port: number
  resolve: (socket: Socket) => void
  reject: (err: Error) => void
}

interface HelperSpawnSpec {
  nsenterPath: string
  nodePath: string
  helperPath: string
  startTimeoutMs: number
}

/**
 * One helper process lifetime: spawn, identity check, requests, death. It never
 * restarts itself; {@link NamespaceSlot} does.
 */
class HelperProcess {
  readonly path: string
  readonly startedAt = Date.now()
  readonly child: ChildProcess
  /** Resolves when the helper reported the expected namespace; rejects with `PFG_ERR_AGENT_NETNS`. */
  readonly ready: Promise<void>
  /** Resolves once the process is gone. */
  readonly exited: Promise<void>
  isReady = false
  /** Called once when it dies; `expected` is false for a crash after it was ready. */
  onDeath: ((expected: boolean) => void) | undefined

  readonly #log: Logger
  readonly #stats: NetnsDialerStats
  readonly #pending = new Map<number, PendingRequest>()
  #nextId = 0
  #dead = false
  #stopping = false
  #stderrTail = ''
  #readyResolve!: () => void
  #readyReject!: (err: AppError) => void
  #startTimer: NodeJS.Timeout | undefined

  constructor(
    path: string,
    expected: NsIdentity,
    spec: HelperSpawnSpec,
    log: Logger,
    stats: NetnsDialerStats,
  ) {
    this.path = path
    this.#log = log
    this.#stats = stats
    this.ready = new Promise<void>((resolve, reject) => {
      this.#readyResolve = resolve
      this.#readyReject = reject
    })
    // Waiters attach later; a start failure nobody waits for is not an unhandled rejection.
    this.ready.catch(() => {})
    // A minimal environment: the helper needs none, and must not inherit NODE_OPTIONS & co.
    this.child = spawn(spec.nsenterPath, [`--net=${path}`, '--', spec.nodePath, spec.helperPath], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      serialization: 'json',
    })
    let exitedResolve!: () => void
    this.exited = new Promise<void>((resolve) => (exitedResolve = resolve))
    this.child.stderr?.setEncoding('utf8')
    this.child.stderr?.on('data', (chunk: string) => {
      this.#stderrTail = (this.#stderrTail + chunk).slice(-2048)
      for (const line of chunk.split('\n')) {
        if (line.trim() !== '') this.#log.warn({ netns: path, helper: line.trim() }, 'netns helper')
      }
    })
    this.child.on('message', (msg: unknown, handle: unknown) =>
      this.#onMessage(msg, handle, expected),
    )
    // A ready helper that goes away fails its requests at once; one that dies while
    // starting is reported on 'close', once stderr has drained, so the error can quote
    // nsenter's complaint (e.g. "reassociate to namespace 'ns/net' failed").
    this.child.on('disconnect', () => {
      if (this.isReady) this.#die('its IPC channel closed')
      else this.#kill()
    })
    this.child.on('error', (err) => {
      this.#die(`it could not be started or signalled: ${err.message}`)
      if (this.child.pid === undefined) exitedResolve()
    })
    const exitText = (code: number | null, signal: NodeJS.Signals | null): string =>
      signal !== null ? `it was killed by ${signal}` : `it exited with code ${code}`
    this.child.on('exit', (code, signal) => {
      exitedResolve()
      if (this.isReady) this.#die(exitText(code, signal))
      else setTimeout(() => this.#die(exitText(code, signal)), 200).unref()
    })
    this.child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      this.#die(exitText(code, signal))
    })
    this.#startTimer = setTimeout(() => {
      this.#fail(
        appError(
          'PFG_ERR_AGENT_NETNS',
          `failed to execute portforward in network namespace "${path}": the namespace helper did not start within ${spec.startTimeoutMs} ms`,
        ),
      )
    }, spec.startTimeoutMs)
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  get dead(): boolean {
    return this.#dead
  }

  /** Sends one connect request. `id` lets the caller {@link cancel} it. */
  request(port: number, timeoutMs: number): { id: number; result: Promise<Socket> } {
    this.#nextId = this.#nextId >= MAX_REQUEST_ID ? 1 : this.#nextId + 1
    const id = this.#nextId
    const result = new Promise<Socket>((resolve, reject) => {
      if (this.#dead || !this.child.connected) {
        this.#die('its IPC channel is closed')
        reject(new HelperGoneError('the namespace helper is gone'))
        return
      }
      this.#pending.set(id, { port, resolve, reject })
      const req: HelperRequest = {
        id,
        port,
        timeoutMs: Math.min(MAX_HELPER_TIMEOUT_MS, Math.max(1, Math.ceil(timeoutMs))),
      }
      this.child.send(req, (err) => {
        // The channel broke: the helper is dead even if its exit is not reported yet.
        if (err !== null) this.#die(`its IPC channel failed (${err.message})`)
      })
    })
    return { id, result }
  }

  /**
   * Forgets a request (its dial was cancelled or timed out): its socket, if it still
   * arrives, is closed. The request's promise rejects so the caller's bookkeeping ends.
   */
  cancel(id: number): void {
    const p = this.#pending.get(id)
    this.#pending.delete(id)
    p?.reject(new Error('dial cancelled'))
  }

  /** Ends the helper on purpose; in-flight requests fail with `reason`. */
  stop(reason: AppError): Promise<void> {
    this.#stopping = true
    this.#fail(reason)
    if (this.child.exitCode === null && this.child.signalCode === null) {
      // Closing the channel makes the helper exit by itself; SIGKILL if it does not.
      if (this.child.connected) this.child.disconnect()
      const killer = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS)
      void this.exited.then(() => clearTimeout(killer))
    }
    return this.exited
  }

  #onMessage(msg: unknown, handle: unknown, expected: NsIdentity): void {
    const socket = handle instanceof Socket ? handle : undefined
    if (!isHelperMessage(msg)) {
      socket?.destroy()
      this.#log.error({ netns: this.path }, 'netns helper sent a malformed message; stopping it')
      this.#kill()
      return
    }
    if (msg.type === 'ready') {
      socket?.destroy()
      this.#onReady(msg, expected)
      return
    }
    const pending = this.#pending.get(msg.id)
    this.#pending.delete(msg.id)
    if (msg.type === 'failed') {
      socket?.destroy()
      pending?.reject(connectError(this.path, pending.port, msg.errors))
      return
    }
    if (socket === undefined) {
      pending?.reject(
        appError(
          'PFG_ERR_AGENT_CONNECT_FAILED',
          `failed to connect to localhost:${pending.port} inside namespace "${this.path}": the helper sent no socket`,
        ),
      )
      return
    }
    if (pending === undefined) {
      // The dial was cancelled or timed out while the helper was connecting.
      socket.destroy()
      this.#stats.lateSocketsClosed++
      return
    }
    // Node builds received sockets with allowHalfOpen false, which would end our side
    // as soon as the pod sends FIN; the relay needs to keep writing until it is done.
    socket.allowHalfOpen = true
    socket.setNoDelay(true)
    pending.resolve(socket)
  }

  #onReady(msg: Extract<HelperMessage, { type: 'ready' }>, expected: NsIdentity): void {
    if (this.isReady) return
    if (!sameIdentity(msg, expected)) {
      this.#fail(
        appError(
          'PFG_ERR_AGENT_NETNS',
          `failed to execute portforward in network namespace "${this.path}": the helper entered namespace ${msg.dev}:${msg.ino}, expected ${expected.dev}:${expected.ino}`,
        ),
      )
      this.#kill()
      return
    }
    clearTimeout(this.#startTimer)
    this.isReady = true
    this.#readyResolve()
  }

  /** Fails the start (if still pending) and every in-flight request with `err`. */
  #fail(err: Error): void {
    clearTimeout(this.#startTimer)
    if (!this.isReady) {
      this.#readyReject(
        err instanceof AppError
          ? err
          : appError(
              'PFG_ERR_AGENT_NETNS',
              `failed to execute portforward in network namespace "${this.path}": ${err.message}`,
            ),
      )
    }
    const pending = [...this.#pending.values()]
    this.#pending.clear()
    for (const p of pending) p.reject(err)
    if (!this.isReady) this.#kill()
  }

  #kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }

  #die(why: string): void {
    if (this.#dead) return
    this.#dead = true
    const wasReady = this.isReady
    const detail = this.#stderrTail.trim().split('\n').pop()
    const reason = `the namespace helper died: ${why}${detail ? ` (${detail})` : ''}`
    if (!wasReady) {
      this.#fail(
        appError(
          'PFG_ERR_AGENT_NETNS',
          `failed to execute portforward in network namespace "${this.path}": ${reason}`,
        ),
      )
    } else {
      this.#fail(new HelperGoneError(reason))
    }
    this.#kill()
    const expected = this.#stopping || !wasReady
    if (!expected) {
      this.#stats.helperCrashes++
      this.#log.warn({ netns: this.path, pid: this.pid, reason }, 'netns helper died')
    }
    this.onDeath?.(expected)
  }
}

/** What the slot needs from its dialer. */
interface SlotContext {
  spec: HelperSpawnSpec
  log: Logger
  stats: NetnsDialerStats
  backoff: BackoffOptions
  idleTimeoutMs: number
  checkIntervalMs: number
  /** Removes the slot from the dialer (it is retired). */
  retire: (slot: NamespaceSlot, reason: AppError) => void
}

const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms).unref())

/**
 * One namespace path: its helper (at most one at a time), restarts with backoff,
 * idle stop and the periodic check that the path still names the same namespace.
 */
class NamespaceSlot {
  readonly path: string
  readonly identity: NsIdentity
  readonly pods = new Set<string>()
  retired = false

  readonly #ctx: SlotContext
  readonly #backoff: Backoff
  #helper: HelperProcess | undefined
  #nextStartAt = 0
  #lastStartError: AppError | undefined
  #inflight = 0
  #restartTimer: NodeJS.Timeout | undefined
  #idleTimer: NodeJS.Timeout | undefined
  #checkTimer: NodeJS.Timeout
  #retiredError: AppError | undefined

  constructor(path: string, identity: NsIdentity, ctx: SlotContext) {
    this.path = path
    this.identity = identity
    this.#ctx = ctx
    this.#backoff = new Backoff(ctx.backoff)
    this.#checkTimer = setInterval(() => void this.check(), ctx.checkIntervalMs).unref()
  }

  info(): NetnsHelperInfo {
    const h = this.#helper
    return {
      path: this.path,
      pid: h?.pid,
      state: h === undefined ? 'waiting-restart' : h.isReady ? 'ready' : 'starting',
      pods: [...this.pods].sort(),
    }
  }

  /** Retires the slot if its path is gone or now names another namespace. */
  async check(): Promise<void> {
    if (this.retired) return
    let id: NsIdentity
    try {
      id = await readIdentity(this.path)
    } catch (err) {
      this.#ctx.retire(this, err as AppError)
      return
    }
    if (!sameIdentity(id, this.identity)) {
      this.#ctx.retire(
        this,
        appError(
          'PFG_ERR_AGENT_NETNS',
          `failed to execute portforward in network namespace "${this.path}": the namespace was deleted or replaced`,
        ),
      )
    }
  }

  /** Connects through the helper; retries once on a restarted helper if it died meanwhile. */
  async dial(port: number, deadline: number, ctl: DialControl): Promise<Socket> {
    this.#inflight++
    clearTimeout(this.#idleTimer)
    try {
      for (let attempt = 0; ; attempt++) {
        ctl.stage = 'start'
        const helper = await this.#ensureHelper(deadline, ctl)
        ctl.stage = 'connect'
        const { id, result } = helper.request(port, deadline - Date.now())
        ctl.onCancel = () => helper.cancel(id)
        try {
          return await result
        } catch (err) {
          if (!(err instanceof HelperGoneError)) throw err
          if (attempt === 0 && !ctl.cancelled && !this.retired && Date.now() < deadline) {
            this.#ctx.stats.retries++
            continue
          }
          throw appError(
            'PFG_ERR_AGENT_NETNS',
            `failed to execute portforward in network namespace "${this.path}": ${err.message}`,
            { cause: err },
          )
        } finally {
          ctl.onCancel = undefined
        }
      }
    } finally {
      this.#inflight--
      this.#armIdle()
    }
  }

  /** Ends the helper; in-flight dials fail with `reason`. */
  retire(reason: AppError): Promise<void> {
    this.retired = true
    this.#retiredError = reason
    clearInterval(this.#checkTimer)
    clearTimeout(this.#idleTimer)
    clearTimeout(this.#restartTimer)
    const h = this.#helper
    this.#helper = undefined
    return h === undefined ? Promise.resolve() : h.stop(reason)
  }

  async #ensureHelper(deadline: number, ctl: DialControl): Promise<HelperProcess> {
    for (;;) {
      if (this.retired) throw this.#retiredError!
      // The caller has already been answered; this only stops the work.
      if (ctl.cancelled) throw new Error('cancelled')
      const h = this.#helper
      if (h !== undefined) {
        await h.ready
        if (this.retired) throw this.#retiredError!
        if (!h.dead) return h
        continue
      }
      const wait = this.#nextStartAt - Date.now()
      if (wait > 0) {
        // Fail fast rather than time out when the backoff outlasts this dial.
        if (this.#lastStartError !== undefined && Date.now() + wait >= deadline) {
          throw this.#lastStartError
        }
        await sleep(wait)
        continue
      }
      this.#start()
    }
  }

  #start(): void {
    clearTimeout(this.#restartTimer)
    this.#restartTimer = undefined
    const h = new HelperProcess(
      this.path,
      this.identity,
      this.#ctx.spec,
      this.#ctx.log,
      this.#ctx.stats,
    )
    this.#ctx.stats.helperStarts++
    this.#helper = h
    h.ready.then(
      () => {
        this.#lastStartError = undefined
        this.#ctx.log.debug({ netns: this.path, pid: h.pid }, 'netns helper ready')
      },
      (err: AppError) => {
        this.#lastStartError = err
        this.#nextStartAt = Date.now() + this.#backoff.next()
        if (this.#helper === h) this.#helper = undefined
        this.#ctx.log.warn({ netns: this.path, err: err.message }, 'netns helper failed to start')
        // Perhaps the namespace went away: find out now rather than at the next tick.
        void this.check()
      },
    )
    h.onDeath = (expected) => {
      if (this.#helper === h) this.#helper = undefined
      if (expected || this.retired) return
      if (Date.now() - h.startedAt >= STABLE_UPTIME_MS) this.#backoff.reset()
      const delay = this.#backoff.next()
      this.#nextStartAt = Date.now() + delay
      // Restart eagerly so the next dial finds a helper ready, unless the namespace is gone.
      this.#restartTimer = setTimeout(() => {
        void this.check().then(() => {
          if (!this.retired && this.#helper === undefined) this.#start()
        })
      }, delay).unref()
    }
  }

  #armIdle(): void {
    if (this.#inflight > 0 || this.retired || this.#ctx.idleTimeoutMs <= 0) return
    clearTimeout(this.#idleTimer)
    this.#idleTimer = setTimeout(() => {
      if (this.#inflight > 0 || this.retired) return
      this.#ctx.log.debug({ netns: this.path }, 'netns helper idle; stopping it')
      this.#ctx.retire(
        this,
        appError(
          'PFG_ERR_AGENT_NETNS',
          `failed to execute portforward in network namespace "${this.path}": the helper was stopped (idle)`,
        ),
      )
    }, this.#ctx.idleTimeoutMs).unref()
  }
}

/**
 * Dials pods inside their network namespaces through per-namespace helper processes.
 *
 * @example
 * ```ts
 * const dialer = new NetnsDialer({ pods: [['default/echo', 'pfgate-echo']] })
 * const socket = await dialer.dial({ namespace: 'default', name: 'echo' }, 5000, {
 *   signal: AbortSignal.timeout(10_000),
 *   timeoutMs: 5000,
 * })
 * ```
 */
export class NetnsDialer implements PodDialer {
  readonly #pods = new Map<string, string>()
  readonly #slots = new Map<string, NamespaceSlot>()
  readonly #stopping = new Set<Promise<void>>()
  readonly #sockets = new Set<Socket>()
  readonly #ctx: SlotContext
  readonly #allowRequestNetns: boolean
  readonly #allowHostNetns: boolean
  readonly #log: Logger
  readonly #stats: NetnsDialerStats = {
    dials: 0,
    connected: 0,
    helperStarts: 0,
    helperCrashes: 0,
    retries: 0,
    lateSocketsClosed: 0,
  }
  #hostNetns: Promise<NsIdentity[]> | undefined
  #closed = false

  constructor(options: NetnsDialerOptions = {}) {
    this.#log = options.log ?? silentLogger()
    this.#allowRequestNetns = options.allowRequestNetns ?? true
    this.#allowHostNetns = options.allowHostNetns ?? false
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
    this.setPods(options.pods ?? [])
  }

  /**
   * Replaces the config's pod → handle map (config reload). Pods that left it, or
   * whose handle changed, are forgotten (see {@link forget}). Throws
   * `PFG_ERR_CONFIG_INVALID` listing every invalid handle, and then changes nothing.
   */
  setPods(pods: Iterable<readonly [string, string]>): void {
    const next = new Map<string, string>()
    const problems: string[] = []
    for (const [key, handle] of pods) {
      try {
        resolveNetnsHandle(handle, 'config')
        next.set(key, handle)
      } catch (err) {
        problems.push(`pod ${key}: ${(err as Error).message}`)
      }
    }
    if (problems.length > 0) {
      throw appError('PFG_ERR_CONFIG_INVALID', `invalid netns handles: ${problems.join('; ')}`)
    }
    const previous = new Map(this.#pods)
    this.#pods.clear()
    for (const [k, v] of next) this.#pods.set(k, v)
    for (const [key, handle] of previous) {
      if (next.get(key) !== handle) this.#dropPod(key)
    }
  }

  /**
   * The pod is gone (config or registry change): drops its config entry and ends
   * helpers that no other pod has used. Connections already relayed are not touched.
   */
  forget(namespace: string, pod: string): void {
    const key = `${namespace}/${pod}`
    this.#pods.delete(key)
    this.#dropPod(key)
  }

  /** Live helpers, for diagnostics and tests. */
  helpers(): NetnsHelperInfo[] {
    return [...this.#slots.values()].map((s) => s.info())
  }

  /** A snapshot of the counters. */
  stats(): NetnsDialerStats {
    return { ...this.#stats }
  }

  dial(target: PodTarget, port: number, options: DialOptions): Promise<Socket> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return Promise.reject(new RangeError(`port ${port} is not an integer in 1..65535`))
    }
    this.#stats.dials++
    const { signal, timeoutMs } = options
    const ctl: DialControl = { cancelled: false, stage: 'resolve', onCancel: undefined }
    const deadline = Date.now() + timeoutMs
    return new Promise<Socket>((resolve, reject) => {
      let settled = false
      const cancel = (): void => {
        ctl.cancelled = true
        ctl.onCancel?.()
      }
      const finish = (err: Error | undefined, socket?: Socket): void => {
        if (settled) {
          if (socket !== undefined) {
            socket.destroy()
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
        this.#sockets.add(socket!)
        socket!.once('close', () => this.#sockets.delete(socket!))
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
      this.#dial(target, port, deadline, ctl).then(
        (socket) => finish(undefined, socket),
        (err: Error) => finish(err),
      )
    })
  }

  /** Ends every helper (waiting for the processes to exit) and closes the sockets it handed out. */
  async close(): Promise<void> {
    this.#closed = true
    const reason = appError('PFG_ERR_AGENT_CONNECT_FAILED', 'the agent is shutting down')
    for (const slot of [...this.#slots.values()]) this.#retire(slot, reason)
    for (const s of this.#sockets) s.destroy()
    this.#sockets.clear()
    while (this.#stopping.size > 0) await Promise.all([...this.#stopping])
  }

  async #dial(
    target: PodTarget,
    port: number,
    deadline: number,
    ctl: DialControl,
  ): Promise<Socket> {
    if (this.#closed) {
      throw appError('PFG_ERR_AGENT_CONNECT_FAILED', 'the agent is shutting down')
    }
    const podKey = `${target.namespace}/${target.name}`
    let handle = this.#pods.get(podKey)
    let source: NetnsHandleSource = 'config'
    if (handle === undefined) {
      if (!this.#allowRequestNetns || target.netns === undefined || target.netns === '') {
        throw appError(
          'PFG_ERR_AGENT_POD_NOT_FOUND',
          `pod ${podKey} is not on this node (no network namespace known for it)`,
        )
      }
      handle = target.netns
      source = 'request'
    } else if (target.netns !== undefined && target.netns !== handle) {
      this.#log.debug(
        { pod: podKey, config: handle, request: target.netns },
        'netns from config wins',
      )
    }
    const path = resolveNetnsHandle(handle, source)
    let identity: NsIdentity
    try {
      identity = await readIdentity(path)
    } catch (err) {
      // Deleted: end its helper now rather than at the next periodic check.
      const stale = this.#slots.get(path)
      if (stale !== undefined) this.#retire(stale, err as AppError)
      throw err
    }
    if (source === 'request' && !this.#allowHostNetns && (await this.#isHostNetns(identity))) {
      throw appError(
        'PFG_ERR_AGENT_NETNS',
        `failed to execute portforward in network namespace "${path}": it is the node's own network namespace (not allowed from the request)`,
      )
    }
    if (ctl.cancelled) throw new Error('cancelled')
    let slot = this.#slots.get(path)
    if (slot !== undefined && !sameIdentity(slot.identity, identity)) {
      this.#retire(
        slot,
        appError(
          'PFG_ERR_AGENT_NETNS',
          `failed to execute portforward in network namespace "${path}": the namespace was deleted or replaced`,
        ),
      )
      slot = undefined
    }
    if (slot === undefined) {
      await assertNsfs(path)
      if (this.#closed) throw appError('PFG_ERR_AGENT_CONNECT_FAILED', 'the agent is shutting down')
      if (ctl.cancelled) throw new Error('cancelled')
      // Another dial may have created it while we awaited.
      slot = this.#slots.get(path)
      if (slot === undefined || !sameIdentity(slot.identity, identity)) {
        if (slot !== undefined) {
          this.#retire(
            slot,
            appError(
              'PFG_ERR_AGENT_NETNS',
              `failed to execute portforward in network namespace "${path}": the namespace was deleted or replaced`,
            ),
          )
        }
        slot = new NamespaceSlot(path, identity, this.#ctx)
        this.#slots.set(path, slot)
      }
    }
    slot.pods.add(podKey)
    return slot.dial(port, deadline, ctl)
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

  /** The agent's own namespace (and init's): request handles may not point there. */
  #isHostNetns(id: NsIdentity): Promise<boolean> {
    this.#hostNetns ??= Promise.all(
      ['/proc/self/ns/net', '/proc/1/ns/net'].map((p) =>
        stat(p).then(
          (st) => ({ dev: st.dev, ino: st.ino }),
          () => ({ dev: -1, ino: -1 }),
        ),
      ),
    )
    return this.#hostNetns.then((hosts) => hosts.some((h) => sameIdentity(h, id)))
  }

  #dropPod(key: string): void {
    for (const slot of [...this.#slots.values()]) {
      if (!slot.pods.delete(key) || slot.pods.size > 0) continue
      this.#retire(
        slot,
        appError('PFG_ERR_AGENT_POD_NOT_FOUND', `pod ${key} is no longer on this node`),
      )
    }
  }

  #retire(slot: NamespaceSlot, reason: AppError): void {
    if (slot.retired) return
    if (this.#slots.get(slot.path) === slot) this.#slots.delete(slot.path)
    const done = slot.retire(reason)
    this.#stopping.add(done)
    void done.then(() => this.#stopping.delete(done))
  }
}
