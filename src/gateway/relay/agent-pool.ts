/**
 * One pooled mutual-TLS HTTP/2 session per node agent, shared by every stream
 * to that node: connect on demand, reconnect with backoff, PING keepalive,
 * GOAWAY-aware (a draining session keeps its streams; new streams get a new
 * session), tuned windows (docs/performance.md).
 *
 * @module
 */
import { connect, constants as h2c } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from 'node:http2'
import { isIPv6 } from 'node:net'
import { Backoff } from '../../shared/backoff.js'
import { appError, describeError } from '../../shared/errors.js'
import type { AppError, AppErrorCode } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { h2SessionOptions, widenConnectionWindow } from '../../protocol/h2-settings.js'
import { parseStatus, statusErrorCode } from '../../protocol/status.js'
import { ERROR_CODES } from '../../shared/errors.js'
import type { NodeInfo } from '../registry/types.js'
import { resetStream } from '../../shared/relay-endpoints.js'
import { keepAlive } from '../../shared/keepalive.js'

/** TLS material and timings for the agent hop. */
export interface AgentPoolOptions {
  /** CA that issued the agents' certificates. */
  ca: string | Buffer
  /** The gateway's client certificate and key. */
  cert: string | Buffer
  key: string | Buffer
  connectTimeoutMs: number
  /** PING interval; a PING unanswered for this long ends the session. 0 disables. */
  keepaliveMs: number
  logger: Logger
  /** Backoff between failed connects (defaults: 100 ms doubling to 2 s). */
  backoff?: { initialMs: number; maxMs: number }
  /** Called with each new agent session (the buffer budget sets its windows). */
  onSession?: (session: ClientHttp2Session) => void
  /**
   * Reverse-connected agents (src/gateway/relay/reverse-agents.ts): a node whose agent
   * is connected to this replica is reached over that session; with `reverseOnly`, a
   * node whose agent is not connected is never dialed.
   */
  reverse?: { session(node: string): ClientHttp2Session | undefined; readonly size: number }
  reverseOnly?: boolean
}

/** Options for one stream. */
export interface AgentStreamOptions {
  /** Cancels the open (the client went away). */
  signal?: AbortSignal
  /** Gives up after this long waiting for the agent's 200. */
  timeoutMs: number
}

const MAX_ERROR_BODY = 64 * 1024

function ignoreStreamError(): void {}

/** The client-facing error for an agent's non-200 answer. */
function errorFromAgent(status: number, body: string, node: string): AppError {
  const st = parseStatus(body)
  const code = st !== undefined ? statusErrorCode(st) : undefined
  const message = st?.message ?? `agent on node ${node} answered ${status}`
  // Errors about the pod pass through; anything else means the gateway and agent disagree,
  // which is the gateway's problem to report as 502, not the client's fault.
  if (status === 404 || status === 502 || status === 503 || status === 504) {
    const known = code !== undefined && code in ERROR_CODES ? (code as AppErrorCode) : undefined
    return appError(
      known ?? (status === 504 ? 'PFG_ERR_RELAY_CONNECT_TIMEOUT' : 'PFG_ERR_RELAY_CONNECT_REFUSED'),
      message,
      { statusCode: status },
    )
  }
  return appError(
    'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
    `agent on node ${node} refused the stream (${status}: ${message})`,
  )
}

/** The connection to one agent. */
export class AgentConnection {
  readonly key: string
  readonly node: NodeInfo
  #opts: AgentPoolOptions
  #session: ClientHttp2Session | undefined
  #connecting: Promise<ClientHttp2Session> | undefined
  #backoff: Backoff
  #retryAt = 0
  #lastError: AppError | undefined
  #closed = false
  /** Sessions still carrying streams after GOAWAY/replacement. */
  readonly #draining = new Set<ClientHttp2Session>()

  constructor(node: NodeInfo, options: AgentPoolOptions) {
    this.node = node
    this.key = connectionKey(node)
    this.#opts = options
    this.#backoff = new Backoff(options.backoff ?? { initialMs: 100, maxMs: 2000 })
  }

  /** Is a session up right now? */
  get connected(): boolean {
    return this.#session !== undefined && !this.#session.destroyed && !this.#session.closed
  }

  /** All sessions (current and draining) — for counting. */
  sessionCount(): number {
    return (this.connected ? 1 : 0) + this.#draining.size
  }

  /**
   * Opens a stream on the agent and resolves once the agent answered 200 (the pod's
   * port is connected). Rejects with an AppError otherwise.
   */
  async open(
    path: string,
    headers: OutgoingHttpHeaders,
    options: AgentStreamOptions,
  ): Promise<ClientHttp2Stream> {
    // The signal also cuts the wait for a session being connected (a blackholed agent must
    // not hold the stream past its open timeout); the connect itself goes on for later streams.
    const session = await abortable(this.#ready(options.signal), options.signal)
    if (options.signal?.aborted === true) {
      throw appError('PFG_ERR_RELAY_STREAM_RESET', 'the client went away')
    }
    let req: ClientHttp2Stream
    try {
      req = session.request({ ':method': 'POST', ':path': path, ...headers }, { endStream: false })
    } catch (err) {
      this.#detach(session)
      throw appError(
        'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        `node agent ${this.node.name} session failed: ${describeError(err)}`,
        { cause: err },
      )
    }
    return new Promise<ClientHttp2Stream>((resolve, reject) => {
      let settled = false
      const settle = (err: AppError | undefined): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        req.off('response', onResponse)
        req.off('error', onError)
        req.off('close', onClose)
        if (err === undefined) {
          // Until the caller's relay listens, an error must not go unhandled. A module-level
          // listener: a closure would keep this scope alive as long as the stream lives.
          req.on('error', ignoreStreamError)
          resolve(req)
        } else {
          resetStream(req, h2c.NGHTTP2_CANCEL)
          reject(err)
        }
      }
      const onAbort = (): void =>
        settle(appError('PFG_ERR_RELAY_STREAM_RESET', 'the client went away'))
      const timer = setTimeout(
        () =>
          settle(
            appError(
              'PFG_ERR_RELAY_CONNECT_TIMEOUT',
              `timed out after ${options.timeoutMs} ms waiting for node agent ${this.node.name} to connect to the pod`,
            ),
          ),
        options.timeoutMs,
      )
      const onResponse = (h: Record<string, string | string[] | number | undefined>): void => {
        const status = Number(h[':status'])
        if (status === 200) return settle(undefined)
        // Read the Status body, bounded, then fail.
        const chunks: Buffer[] = []
        let size = 0
        req.on('data', (c: Buffer) => {
          size += c.length
          if (size <= MAX_ERROR_BODY) chunks.push(c)
        })
        const done = (): void =>
          settle(errorFromAgent(status, Buffer.concat(chunks).toString('utf8'), this.node.name))
        req.once('end', done)
        req.once('close', done)
      }
      const onError = (err: Error): void =>
        settle(
          appError(
            'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
            `stream to node agent ${this.node.name} failed: ${describeError(err)}`,
            { cause: err },
          ),
        )
      const onClose = (): void =>
        settle(
          appError(
            'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
            `node agent ${this.node.name} closed the stream (code ${req.rstCode ?? 'none'})`,
          ),
        )
      req.on('response', onResponse)
      req.on('error', onError)
      req.on('close', onClose)
      if (options.signal !== undefined) {
        if (options.signal.aborted) onAbort()
        else options.signal.addEventListener('abort', onAbort, { once: true })
      }
    })
  }

  async #ready(signal?: AbortSignal): Promise<ClientHttp2Session> {
    if (this.#closed) throw appError('PFG_ERR_RELAY_DRAINING', 'the gateway is shutting down')
    const reverse = this.#opts.reverse?.session(this.node.name)
    if (reverse !== undefined) return reverse
    if (this.#opts.reverseOnly === true) {
      throw appError(
        'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        `node agent ${this.node.name} is not connected to this gateway replica`,
      )
    }
    const s = this.#session
    if (s !== undefined && !s.destroyed && !s.closed) return s
    if (this.#connecting !== undefined) return this.#connecting
    const now = Date.now()
    if (now < this.#retryAt && this.#lastError !== undefined) {
      throw appError(
        'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        `${this.#lastError.message} (retrying in ${this.#retryAt - now} ms)`,
      )
    }
    this.#connecting = this.#connect(signal).finally(() => {
      this.#connecting = undefined
    })
    return this.#connecting
  }

  #connect(_signal?: AbortSignal): Promise<ClientHttp2Session> {
    const { node } = this
    const host = isIPv6(node.address) ? `[${node.address}]` : node.address
    const authority = `https://${host}:${node.port}`
    const log = this.#opts.logger
    return new Promise<ClientHttp2Session>((resolve, reject) => {
      const session = connect(authority, {
        ...h2SessionOptions(),
        ca: this.#opts.ca,
        cert: this.#opts.cert,
        key: this.#opts.key,
        servername: node.tlsServerName ?? node.name,
        minVersion: 'TLSv1.2',
      })
      let up = false
      const fail = (err: unknown): void => {
        clearTimeout(timer)
        if (up) return
        up = true // settled
        session.destroy()
        const e = appError(
          'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
          `node agent ${node.name} (${node.address}:${node.port}) unreachable: ${describeError(err)}`,
          { cause: err },
        )
        this.#lastError = e
        this.#retryAt = Date.now() + this.#backoff.next()
        log.warn({ node: node.name, err: describeError(err) }, 'agent connect failed')
        reject(e)
      }
      const timer = setTimeout(
        () => fail(new Error(`connect timed out after ${this.#opts.connectTimeoutMs} ms`)),
        this.#opts.connectTimeoutMs,
      )
      session.once('connect', () => {
        clearTimeout(timer)
        if (up) return
        up = true
        widenConnectionWindow(session)
        this.#backoff.reset()
        this.#lastError = undefined
        this.#retryAt = 0
        this.#session = session
        this.#keepalive(session)
        this.#opts.onSession?.(session)
        log.debug({ node: node.name }, 'agent session up')
        resolve(session)
      })
      session.on('error', (err) => {
        if (!up) fail(err)
        else log.warn({ node: node.name, err: describeError(err) }, 'agent session error')
      })
      session.on('goaway', (code) => {
        // Graceful agent shutdown: keep the in-flight streams, route new ones elsewhere.
        log.info({ node: node.name, code }, 'agent sent GOAWAY')
        this.#detach(session)
      })
      session.once('close', () => {
        clearTimeout(timer)
        this.#draining.delete(session)
        if (this.#session === session) this.#session = undefined
        if (!up) fail(new Error('connection closed during handshake'))
      })
    })
  }

  #keepalive(session: ClientHttp2Session): void {
    const stop = keepAlive(session, this.#opts.keepaliveMs, (why) => {
      if (session.destroyed) return
      this.#opts.logger.warn({ node: this.node.name, why }, 'agent unresponsive; closing session')
      session.destroy()
    })
    session.once('close', stop)
  }

  #detach(session: ClientHttp2Session): void {
    if (this.#session === session) this.#session = undefined
    if (!session.destroyed && !session.closed) {
      this.#draining.add(session)
      // close(): no new streams; ends once the in-flight ones finish.
      session.close()
    }
  }

  /** Closes the sessions: gracefully, or (`force`) resetting every stream. */
  close(force: boolean): void {
    this.#closed = true
    const all = [...this.#draining]
    if (this.#session !== undefined) all.push(this.#session)
    for (const s of all) {
      if (force) s.destroy(undefined, h2c.NGHTTP2_CANCEL)
      else s.close()
    }
    this.#session = undefined
  }
}

/** `promise`, or a rejection (`PFG_ERR_RELAY_STREAM_RESET`) as soon as `signal` aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise
  const gone = (): AppError => appError('PFG_ERR_RELAY_STREAM_RESET', 'the client went away')
  if (signal.aborted) {
    promise.catch(() => undefined)
    return Promise.reject(gone())
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(gone())
    signal.addEventListener('abort', onAbort, { once: true })
    promise.finally(() => signal.removeEventListener('abort', onAbort)).then(resolve, reject)
  })
}

function connectionKey(node: NodeInfo): string {
  return `${node.name}|${node.address}|${node.port}|${node.tlsServerName ?? ''}`
}

/** Every agent connection, keyed by node name + address. */
export class AgentPool {
  readonly #opts: AgentPoolOptions
  readonly #conns = new Map<string, AgentConnection>()

  constructor(options: AgentPoolOptions) {
    this.#opts = options
  }

  /** The connection for `node` (created on first use; replaced when its address changes). */
  get(node: NodeInfo): AgentConnection {
    const existing = this.#conns.get(node.name)
    if (existing !== undefined && existing.key === connectionKey(node)) return existing
    if (existing !== undefined) existing.close(false)
    const conn = new AgentConnection(node, this.#opts)
    this.#conns.set(node.name, conn)
    return conn
  }

  /** Number of live agent sessions, reverse-connected ones included (metrics). */
  sessionCount(): number {
    let n = this.#opts.reverse?.size ?? 0
    for (const c of this.#conns.values()) n += c.sessionCount()
    return n
  }

  close(force: boolean): void {
    for (const c of this.#conns.values()) c.close(force)
    this.#conns.clear()
  }
}
