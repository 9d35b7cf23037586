/**
 * The CLI's connection to the gateway: one HTTP/2 session over TLS that carries
 * every forwarded connection as a stream, kept alive with PING, re-established
 * with backoff when it drops.
 *
 * Every request and stream asks the credential provider for the credential to send
 * (src/cli/credentials/): an exec plugin's token is refreshed before it expires, and a
 * 401 refreshes it once and retries that request or stream. A client certificate that
 * changes (a plugin's new certificate) starts a new session; streams on the old one
 * finish there.
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
import { StaticCredentials } from './credentials/providers.js'
import type { Credential, CredentialProvider } from './credentials/types.js'

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
  /** Where credentials come from (default: the config's static token and certificate). */
  credentials?: CredentialProvider
}

/** Events: `connected`, `disconnected` (err?), `reconnecting` (delayMs). */
export class GatewayClient extends EventEmitter {
  readonly #cfg: ClientConfig
  readonly #prefix: string
  readonly #userAgent: string
  #bearerToken: string | undefined
  #bearerValue: string | undefined
  readonly #connectTimeoutMs: number
  readonly #keepaliveMs: number
  readonly #creds: CredentialProvider
  /** The session(s) to the gateway, made with {@link #h2Cert}'s client certificate. */
  #h2: H2ClientSession | undefined
  #h2Cert: Buffer | undefined
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
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000
    this.#keepaliveMs = options.keepaliveMs ?? 30_000
    this.#creds =
      options.credentials ??
      new StaticCredentials(
        {
          ...(cfg.token !== undefined ? { token: cfg.token } : {}),
          ...(cfg.cert !== undefined && cfg.key !== undefined
            ? { cert: cfg.cert, key: cfg.key }
            : {}),
        },
        () => undefined,
      )
  }

  /** The HTTP/2 client for `cred`'s client certificate (a new one when it changed). */
  #h2For(cred: Credential | undefined): H2ClientSession {
    const cfg = this.#cfg
    const cert = cred !== undefined ? cred.cert : cfg.cert
    const key = cred !== undefined ? cred.key : cfg.key
    if (this.#h2 !== undefined && sameBytes(cert, this.#h2Cert)) return this.#h2
    // New streams go on a new session; open ones finish on the old one.
    this.#h2?.close('graceful')
    const url = new URL(cfg.server)
    const h2: H2ClientSession = new H2ClientSession({
      authority: url.origin,
      tls: {
        ...(cfg.ca !== undefined ? { ca: cfg.ca } : {}),
        ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
        ...(cfg.tlsServerName !== undefined ? { servername: cfg.tlsServerName } : {}),
        rejectUnauthorized: !cfg.insecureSkipTlsVerify,
      },
      connectTimeoutMs: this.#connectTimeoutMs,
      keepaliveMs: this.#keepaliveMs,
      backoff: { initialMs: 250, maxMs: 5000 },
      events: {
        up: () => this.emit('connected'),
        error: (err) => this.emit('disconnected', err),
        down: () => {
          if (this.#closed || this.#h2 !== h2) return
          this.emit('disconnected')
          this.#scheduleReconnect()
        },
      },
    })
    this.#h2 = h2
    this.#h2Cert = cert
    return h2
  }

  /** Is a session up? */
  get connected(): boolean {
    return this.#h2?.connected ?? false
  }

  /**
   * The session, connecting if needed (with `cred`'s client certificate, when it has one).
   * Rejects with `PFG_ERR_CLI_CONNECT`.
   */
  async session(cred?: Credential): Promise<ClientHttp2Session> {
    if (this.#closed) throw appError('PFG_ERR_CLI_CONNECT', 'client closed')
    try {
      return await this.#h2For(cred).session()
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
    const delay = this.#h2For(undefined).retryDelay()
    this.emit('reconnecting', delay)
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      if (this.#closed || this.connected) return
      this.#creds
        .get()
        .then((cred) => this.session(cred))
        .catch(() => this.#scheduleReconnect())
    }, delay)
    this.#retryTimer.unref()
  }

  #headers(extra: OutgoingHttpHeaders, cred: Credential): OutgoingHttpHeaders {
    const h: OutgoingHttpHeaders = { 'user-agent': this.#userAgent, ...extra }
    if (cred.token !== undefined) h.authorization = this.#bearer(cred.token)
    return h
  }

  /** `Bearer <token>`, built once per token (one string per connection otherwise). */
  #bearer(token: string): string {
    if (token !== this.#bearerToken) {
      this.#bearerToken = token
      this.#bearerValue = `Bearer ${token}`
    }
    return this.#bearerValue as string
  }

  /**
   * Runs `attempt` with the current credential; on a 401, asks the provider for a fresh
   * one and, when it has one, runs `attempt` once more.
   */
  async #withCredentials<T>(attempt: (cred: Credential) => Promise<T>): Promise<T> {
    const cred = await this.#credential()
    try {
      return await attempt(cred)
    } catch (err) {
      if (!(err instanceof GatewayHttpError) || err.status !== 401) throw err
      let fresh: Credential | undefined
      try {
        fresh = await this.#creds.refresh(cred)
      } catch {
        throw err // the provider has told the user why
      }
      if (fresh === undefined) throw err
      return attempt(fresh)
    }
  }

  async #credential(): Promise<Credential> {
    try {
      return await this.#creds.get()
    } catch (err) {
      throw appError('PFG_ERR_CLI_CREDENTIALS', describeError(err), { cause: err })
    }
  }

  /** GET a JSON document; rejects with {@link GatewayHttpError} on a non-2xx answer. */
  getJson<T>(path: string): Promise<T> {
    return this.request<T>('GET', path)
  }

  /** A small JSON request; rejects with {@link GatewayHttpError} on a non-2xx answer. */
  request<T>(method: string, path: string): Promise<T> {
    return this.#withCredentials((cred) => this.#request<T>(method, path, cred))
  }

  async #request<T>(method: string, path: string, cred: Credential): Promise<T> {
    const session = await this.session(cred)
    const req = session.request(
      this.#headers(
        {
          ':method': method,
          ':path': this.#prefix + path,
          accept: 'application/json',
        },
        cred,
      ),
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
   * A 401 (an expired token) refreshes the credential and opens the stream once more.
   */
  openStream(path: string, headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream> {
    return this.#withCredentials((cred) => this.#openStream(path, headers, cred))
  }

  async #openStream(
    path: string,
    headers: OutgoingHttpHeaders,
    cred: Credential,
  ): Promise<ClientHttp2Stream> {
    const session = await this.session(cred)
    // One headers object per stream, built once (not a spread of spreads).
    const h: OutgoingHttpHeaders = {
      ':method': 'POST',
      ':path': this.#prefix + path,
      'user-agent': this.#userAgent,
      ...headers,
    }
    if (cred.token !== undefined) h.authorization = this.#bearer(cred.token)
    const req = session.request(h, OPEN_OPTIONS)
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
    this.#h2?.close('goaway-destroy')
    this.#creds.close()
  }
}

/** A forwarding stream stays open for the relay. */
const OPEN_OPTIONS = { endStream: false } as const

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.equals(b))
}
