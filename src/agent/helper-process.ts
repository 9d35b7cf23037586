/**
 * One netns helper process lifetime, seen from the agent: spawn it inside a namespace
 * (`nsenter --net=<path> -- node netns-helper.js`), check that it entered the namespace
 * the agent stat'ed, send it connect requests, receive the connected sockets' file
 * descriptors, and notice its death. It never restarts itself; `NamespaceSlot` does.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { Socket } from 'node:net'
import { Socket as UdpSocket } from 'node:dgram'
import { AppError, appError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { connectError } from './netns-connect-error.js'
import { netnsError, sameIdentity } from './netns-handle.js'
import type { NsIdentity } from './netns-handle.js'
import { isHelperMessage, MAX_HELPER_TIMEOUT_MS, MAX_REQUEST_ID } from './netns-helper.js'
import type { HelperMessage, HelperRequest } from './netns-helper.js'

/** Grace for a helper to exit after its IPC channel is closed before SIGKILL, ms. */
const STOP_GRACE_MS = 1_000

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

/** The helper died while a request was in flight (internal: decides the retry). */
export class HelperGoneError extends Error {
  override name = 'HelperGoneError'
}

/** What a request yields: a connected TCP socket, or (UDP) a socket bound in the namespace. */
export type HelperSocket = Socket | UdpSocket

interface PendingRequest {
  port: number
  protocol: 'tcp' | 'udp'
  resolve: (socket: HelperSocket) => void
  reject: (err: Error) => void
}

/** How to start a helper. */
export interface HelperSpawnSpec {
  nsenterPath: string
  nodePath: string
  helperPath: string
  startTimeoutMs: number
}

/**
 * One helper process lifetime: spawn, identity check, requests, death. It never
 * restarts itself; {@link NamespaceSlot} does.
 */
export class HelperProcess {
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
        netnsError(path, `the namespace helper did not start within ${spec.startTimeoutMs} ms`),
      )
    }, spec.startTimeoutMs)
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  get dead(): boolean {
    return this.#dead
  }

  /**
   * Sends one connect request. `id` lets the caller {@link cancel} it. A UDP request
   * resolves with a UDP socket bound inside the namespace; the caller connects it to
   * `address` (the pod address the helper chose, also in the socket's `pfgateAddress`).
   */
  request(
    port: number,
    podIps: readonly string[],
    timeoutMs: number,
    protocol: 'tcp' | 'udp' = 'tcp',
  ): { id: number; result: Promise<HelperSocket> } {
    this.#nextId = this.#nextId >= MAX_REQUEST_ID ? 1 : this.#nextId + 1
    const id = this.#nextId
    const result = new Promise<HelperSocket>((resolve, reject) => {
      if (this.#dead || !this.child.connected) {
        this.#die('its IPC channel is closed')
        reject(new HelperGoneError('the namespace helper is gone'))
        return
      }
      this.#pending.set(id, { port, protocol, resolve, reject })
      const req: HelperRequest = {
        id,
        port,
        timeoutMs: Math.min(MAX_HELPER_TIMEOUT_MS, Math.max(1, Math.ceil(timeoutMs))),
        podIps: [...podIps],
      }
      if (protocol === 'udp') req.protocol = 'udp'
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
    if (handle instanceof UdpSocket) {
      this.#onUdpMessage(msg, handle)
      return
    }
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
      pending?.reject(connectError(this.path, pending.port, msg.errors, pending.protocol))
      return
    }
    if (socket === undefined || pending?.protocol === 'udp') {
      socket?.destroy()
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

  /** A UDP socket arrived: it must answer a pending UDP request, else it is closed. */
  #onUdpMessage(msg: unknown, socket: UdpSocket): void {
    if (!isHelperMessage(msg) || msg.type !== 'connected') {
      socket.close()
      this.#log.error({ netns: this.path }, 'netns helper sent a malformed message; stopping it')
      this.#kill()
      return
    }
    const pending = this.#pending.get(msg.id)
    this.#pending.delete(msg.id)
    if (pending === undefined) {
      socket.close()
      this.#stats.lateSocketsClosed++
      return
    }
    if (pending.protocol !== 'udp') {
      socket.close()
      pending.reject(
        appError(
          'PFG_ERR_AGENT_CONNECT_FAILED',
          `failed to connect to localhost:${pending.port} inside namespace "${this.path}": the helper sent a UDP socket`,
        ),
      )
      return
    }
    ;(socket as UdpSocket & { pfgateAddress?: string }).pfgateAddress = msg.address
    pending.resolve(socket)
  }

  #onReady(msg: Extract<HelperMessage, { type: 'ready' }>, expected: NsIdentity): void {
    if (this.isReady) return
    if (!sameIdentity(msg, expected)) {
      this.#fail(
        netnsError(
          this.path,
          `the helper entered namespace ${msg.dev}:${msg.ino}, expected ${expected.dev}:${expected.ino}`,
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
      this.#readyReject(err instanceof AppError ? err : netnsError(this.path, `${err.message}`))
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
      this.#fail(netnsError(this.path, `${reason}`))
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
