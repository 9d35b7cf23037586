/**
 * The CLI's connection to the gateway: one HTTP/2 session over TLS that carries
 * every forwarded connection as a stream, kept alive with PING, re-established
 * with backoff when it drops.
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { constants as h2c } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from 'node:http2'
import { awaitOpen, ConnectTimeoutError, H2ClientSession } from '../shared/h2-client-session.js'
import { resetStream } from '../shared/relay-endpoints.js'
import { appError, describeError } from '../shared/errors.js'
import { parseStatus, statusErrorCode } from '../protocol/status.js'
import type { KubeStatus } from '../protocol/status.js'
import type { ClientConfig } from './kubeconfig.js'

/** An HTTP error answer from the gateway. */
export class GatewayHttpError extends Error {
  readonly status: number
  readonly kubeStatus: KubeStatus | undefined
  /** Our `PFG_ERR_*` code when the gateway sent one. */
  readonly errorCode: string | undefined

  constructor(status: number, body: string) {
    const st = parseStatus(body)
    super(st?.message ?? (body.trim() || `HTTP ${status}`))
    this.name = 'GatewayHttpError'
    this.status = status
    this.kubeStatus = st
    this.errorCode = st !== undefined ? statusErrorCode(st) : undefined
  }
}

/** Options for {@link GatewayClient}. */
export interface GatewayClientOptions {
  config: ClientConfig
  connectTimeoutMs?: number
  keepaliveMs?: number
  userAgent?: string
}

/** Events: `connected`, `disconnected` (err?), `reconnecting` (delayMs). */
export class GatewayClient extends EventEmitter {
  readonly #cfg: ClientConfig
  readonly #prefix: string
  readonly #userAgent: string
  readonly #h2: H2ClientSession
  #retryTimer: NodeJS.Timeout | undefined
  #closed = false
  /** Streams this client opened that are still open. */
  readonly streams = new Set<ClientHttp2Stream>()

  constructor(options: GatewayClientOptions) {
    super()
    const cfg = options.config
    this.#cfg = cfg
    const url = new URL(cfg.server)
    this.#prefix = url.pathname.replace(/\/+$/, '')
    this.#userAgent = options.userAgent ?? `pfgate/0.1 (node ${process.version})`
    this.#h2 = new H2ClientSession({
      authority: url.origin,
      tls: {
        ...(cfg.ca !== undefined ? { ca: cfg.ca } : {}),
        ...(cfg.cert !== undefined ? { cert: cfg.cert } : {}),
        ...(cfg.key !== undefined ? { key: cfg.key } : {}),
        ...(cfg.tlsServerName !== undefined ? { servername: cfg.tlsServerName } : {}),
        rejectUnauthorized: !cfg.insecureSkipTlsVerify,
      },
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      keepaliveMs: options.keepaliveMs ?? 30_000,
      backoff: { initialMs: 250, maxMs: 5000 },
      events: {
        up: () => this.emit('connected'),
        error: (err) => this.emit('disconnected', err),
        down: () => {
          if (this.#closed) return
          this.emit('disconnected')
          this.#scheduleReconnect()
        },
      },
    })
  }

  /** Is a session up? */
  get connected(): boolean {
    return this.#h2.connected
  }

  /** The session, connecting if needed. Rejects with `PFG_ERR_CLI_CONNECT`. */
  async session(): Promise<ClientHttp2Session> {
    if (this.#closed) throw appError('PFG_ERR_CLI_CONNECT', 'client closed')
    try {
      return await this.#h2.session()
    } catch (err) {
      const why =
        err instanceof ConnectTimeoutError
          ? `timed out after ${err.timeoutMs} ms`
          : describeError(err)
      throw appError('PFG_ERR_CLI_CONNECT', `cannot reach ${this.#cfg.server}: ${why}`, {
        cause: err,
      })
    }
  }

  /** Re-establishes the session in the background, with backoff, until it is up again. */
  #scheduleReconnect(): void {
    if (this.#closed || this.#retryTimer !== undefined) return
    const delay = this.#h2.retryDelay()
    this.emit('reconnecting', delay)
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      if (this.#closed || this.connected) return
      this.session().catch(() => this.#scheduleReconnect())
    }, delay)
    this.#retryTimer.unref()
  }

  #headers(extra: OutgoingHttpHeaders): OutgoingHttpHeaders {
    const h: OutgoingHttpHeaders = { 'user-agent': this.#userAgent, ...extra }
    if (this.#cfg.token !== undefined) h.authorization = `Bearer ${this.#cfg.token}`
    return h
  }

  /** GET a JSON document; rejects with {@link GatewayHttpError} on a non-2xx answer. */
  getJson<T>(path: string): Promise<T> {
    return this.request<T>('GET', path)
  }

  /** A small JSON request; rejects with {@link GatewayHttpError} on a non-2xx answer. */
  async request<T>(method: string, path: string): Promise<T> {
    const session = await this.session()
    const req = session.request(
      this.#headers({
        ':method': method,
        ':path': this.#prefix + path,
        accept: 'application/json',
      }),
    )
    return new Promise<T>((resolve, reject) => {
      let status = 0
      const chunks: Buffer[] = []
      req.on('response', (h) => {
        status = Number(h[':status'])
      })
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8')
        if (status >= 200 && status < 300) {
          try {
            resolve(JSON.parse(body) as T)
          } catch {
            reject(new GatewayHttpError(status, `invalid JSON from ${path}`))
          }
        } else {
          reject(new GatewayHttpError(status, body))
        }
      })
      req.on('error', (err) =>
        reject(appError('PFG_ERR_CLI_CONNECT', describeError(err), { cause: err })),
      )
      req.end()
    })
  }

  /**
   * Opens a forwarding stream; resolves once the gateway answered 200 (the pod's port
   * is connected). Rejects with {@link GatewayHttpError} or a `PFG_ERR_CLI_CONNECT` error.
   */
  async openStream(path: string, headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream> {
    const session = await this.session()
    const req = session.request(
      this.#headers({ ':method': 'POST', ':path': this.#prefix + path, ...headers }),
      {
        endStream: false,
      },
    )
    this.streams.add(req)
    req.once('close', () => this.streams.delete(req))
    const outcome = await awaitOpen(req)
    switch (outcome.kind) {
      case 'ok':
        return req
      case 'refused':
        req.close()
        throw new GatewayHttpError(outcome.status, outcome.body)
      case 'error':
        throw appError('PFG_ERR_CLI_CONNECT', `stream failed: ${describeError(outcome.error)}`, {
          cause: outcome.error,
        })
      default:
        throw appError(
          'PFG_ERR_CLI_CONNECT',
          `stream closed before an answer (code ${req.rstCode ?? 'none'})`,
        )
    }
  }

  /** Closes every stream and the session. */
  close(): void {
    this.#closed = true
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer)
    for (const s of this.streams) resetStream(s, h2c.NGHTTP2_CANCEL)
    this.#h2.close('goaway-destroy')
  }
}
