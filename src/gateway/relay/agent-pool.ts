/**
 * One pooled mutual-TLS HTTP/2 session per node agent, shared by every stream
 * to that node: connect on demand, reconnect with backoff, PING keepalive,
 * GOAWAY-aware (a draining session keeps its streams; new streams get a new
 * session), tuned windows (docs/performance.md).
 *
 * @module
 */
import { constants as h2c } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from 'node:http2'
import { isIPv6 } from 'node:net'
import { appError, describeError } from '../../shared/errors.js'
import type { AppError, AppErrorCode } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { parseStatus, statusErrorCode } from '../../protocol/status.js'
import { ERROR_CODES } from '../../shared/errors.js'
import type { NodeInfo } from '../registry/types.js'
import { resetStream } from '../../shared/relay-endpoints.js'
import { awaitOpen, H2ClientSession } from '../../shared/h2-client-session.js'
import type { OpenOutcome } from '../../shared/h2-client-session.js'

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
  readonly #h2: H2ClientSession
  readonly #reverse: AgentPoolOptions['reverse']
  readonly #reverseOnly: boolean
  #retryAt = 0
  #lastError: AppError | undefined
  #closed = false

  constructor(node: NodeInfo, options: AgentPoolOptions) {
    this.node = node
    this.key = connectionKey(node)
    this.#reverse = options.reverse
    this.#reverseOnly = options.reverseOnly === true
    const host = isIPv6(node.address) ? `[${node.address}]` : node.address
    const log = options.logger
    this.#h2 = new H2ClientSession({
      authority: `https://${host}:${node.port}`,
      tls: {
        ca: options.ca,
        cert: options.cert,
        key: options.key,
        servername: node.tlsServerName ?? node.name,
        minVersion: 'TLSv1.2',
      },
      connectTimeoutMs: options.connectTimeoutMs,
      keepaliveMs: options.keepaliveMs,
      backoff: options.backoff ?? { initialMs: 100, maxMs: 2000 },
      events: {
        up: (session) => {
          this.#lastError = undefined
          this.#retryAt = 0
          options.onSession?.(session)
          log.debug({ node: node.name }, 'agent session up')
        },
        connectFailed: (err) => {
          this.#lastError = unreachable(node, err)
          this.#retryAt = Date.now() + this.#h2.retryDelay()
          log.warn({ node: node.name, err: describeError(err) }, 'agent connect failed')
        },
        error: (err) =>
          log.warn({ node: node.name, err: describeError(err) }, 'agent session error'),
        // Graceful agent shutdown: keep the in-flight streams, route new ones elsewhere.
        goaway: (code) => log.info({ node: node.name, code }, 'agent sent GOAWAY'),
        unresponsive: (why) =>
          log.warn({ node: node.name, why }, 'agent unresponsive; closing session'),
      },
    })
  }

  /** Is a session up right now? */
  get connected(): boolean {
    return this.#h2.connected
  }

  /** All sessions (current and draining) — for counting. */
  sessionCount(): number {
    return this.#h2.sessionCount()
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
    const session = await abortable(this.#ready(), options.signal)
    if (options.signal?.aborted === true) {
      throw appError('PFG_ERR_RELAY_STREAM_RESET', 'the client went away')
    }
    let req: ClientHttp2Stream
    try {
      req = session.request({ ':method': 'POST', ':path': path, ...headers }, { endStream: false })
    } catch (err) {
      this.#h2.detach(session)
      throw appError(
        'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        `node agent ${this.node.name} session failed: ${describeError(err)}`,
        { cause: err },
      )
    }
    const outcome = await awaitOpen(req, options)
    if (outcome.kind === 'ok') return req
    resetStream(req, h2c.NGHTTP2_CANCEL)
    throw this.#openError(outcome, req, options.timeoutMs)
  }

  #openError(outcome: OpenOutcome, req: ClientHttp2Stream, timeoutMs: number): AppError {
    const name = this.node.name
    switch (outcome.kind) {
      case 'refused':
        return errorFromAgent(outcome.status, outcome.body, name)
      case 'aborted':
        return appError('PFG_ERR_RELAY_STREAM_RESET', 'the client went away')
      case 'timeout':
        return appError(
          'PFG_ERR_RELAY_CONNECT_TIMEOUT',
          `timed out after ${timeoutMs} ms waiting for node agent ${name} to connect to the pod`,
        )
      case 'error':
        return appError(
          'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
          `stream to node agent ${name} failed: ${describeError(outcome.error)}`,
          { cause: outcome.error },
        )
      default:
        return appError(
          'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
          `node agent ${name} closed the stream (code ${req.rstCode ?? 'none'})`,
        )
    }
  }

  async #ready(): Promise<ClientHttp2Session> {
    if (this.#closed) throw appError('PFG_ERR_RELAY_DRAINING', 'the gateway is shutting down')
    const reverse = this.#reverse?.session(this.node.name)
    if (reverse !== undefined) return reverse
    if (this.#reverseOnly) {
      throw appError(
        'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        `node agent ${this.node.name} is not connected to this gateway replica`,
      )
    }
    const now = Date.now()
    if (
      !this.#h2.connected &&
      !this.#h2.connecting &&
      now < this.#retryAt &&
      this.#lastError !== undefined
    ) {
      throw appError(
        'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        `${this.#lastError.message} (retrying in ${this.#retryAt - now} ms)`,
      )
    }
    try {
      return await this.#h2.session()
    } catch (err) {
      throw this.#lastError ?? unreachable(this.node, err)
    }
  }

  /** Closes the sessions: gracefully, or (`force`) resetting every stream. */
  close(force: boolean): void {
    this.#closed = true
    this.#h2.close(force ? 'cancel' : 'graceful')
  }
}

function unreachable(node: NodeInfo, err: unknown): AppError {
  return appError(
    'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
    `node agent ${node.name} (${node.address}:${node.port}) unreachable: ${describeError(err)}`,
    { cause: err },
  )
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
