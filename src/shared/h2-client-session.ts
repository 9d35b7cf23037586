/**
 * The HTTP/2 client side both hops share: the gateway's session to each node agent
 * (src/gateway/relay/agent-pool.ts) and the CLI's session to the gateway
 * (src/cli/gateway-client.ts). One session at a time carries every new stream:
 *
 * - connect with a timeout; tuned windows (docs/performance.md);
 * - PING watchdog: a PING unanswered in time destroys the session (src/shared/keepalive.ts);
 * - GOAWAY detaches the session: its in-flight streams go on, new streams get a new session;
 * - {@link awaitOpen}: a stream's answer is a 200, or a non-200 with a `Status` body read
 *   (bounded), or an error, a close, a timeout or a cancel — each caller maps these to its
 *   own errors.
 *
 * @module
 */
import { connect, constants as h2c } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream, SecureClientSessionOptions } from 'node:http2'
import { Backoff } from './backoff.js'
import type { BackoffOptions } from './backoff.js'
import { keepAlive } from './keepalive.js'
import { h2SessionOptions, widenConnectionWindow } from '../protocol/h2-settings.js'

/** What a session reports while it lives; every hook is optional. */
export interface H2SessionEvents {
  /** A new session is up (windows widened, PINGs running). */
  up?(session: ClientHttp2Session): void
  /** A connect failed (the rejection of {@link H2ClientSession.session} carries the same error). */
  connectFailed?(err: Error): void
  /** An error on a session that was up. */
  error?(err: Error): void
  /** The peer sent GOAWAY; the session was detached. */
  goaway?(code: number): void
  /** A PING went unanswered; the session is destroyed right after. */
  unresponsive?(why: string): void
  /** The current session closed (not one detached by GOAWAY). */
  down?(): void
}

/** Options for {@link H2ClientSession}. */
export interface H2ClientSessionOptions {
  /** `https://host:port`. */
  authority: string
  /** TLS options (CA, client certificate, server name, …) merged over the tuned HTTP/2 ones. */
  tls: SecureClientSessionOptions
  connectTimeoutMs: number
  /** PING interval; a PING unanswered for this long ends the session. 0 disables. */
  keepaliveMs: number
  /** Delay between failed connects, doubling ({@link H2ClientSession.retryDelay}). */
  backoff: BackoffOptions
  events?: H2SessionEvents
}

/** How {@link H2ClientSession.close} ends the sessions. */
export type SessionCloseMode =
  /** No new streams; each session ends once its streams have. */
  | 'graceful'
  /** Every stream reset (GOAWAY with CANCEL). */
  | 'cancel'
  /** GOAWAY (no error), then destroyed at once. */
  | 'goaway-destroy'

/** A connect that did not complete within `connectTimeoutMs`. */
export class ConnectTimeoutError extends Error {
  readonly timeoutMs: number
  constructor(timeoutMs: number) {
    super(`connect timed out after ${timeoutMs} ms`)
    this.name = 'ConnectTimeoutError'
    this.timeoutMs = timeoutMs
  }
}

function live(s: ClientHttp2Session | undefined): s is ClientHttp2Session {
  return s !== undefined && !s.destroyed && !s.closed
}

/** One peer's HTTP/2 client session: connected on demand, replaced after GOAWAY or loss. */
export class H2ClientSession {
  readonly #opts: H2ClientSessionOptions
  readonly #events: H2SessionEvents
  readonly #backoff: Backoff
  #session: ClientHttp2Session | undefined
  #connecting: Promise<ClientHttp2Session> | undefined
  /** Sessions still carrying streams after GOAWAY/replacement. */
  readonly #draining = new Set<ClientHttp2Session>()

  constructor(options: H2ClientSessionOptions) {
    this.#opts = options
    this.#events = options.events ?? {}
    this.#backoff = new Backoff(options.backoff)
  }

  /** Is a session up right now? */
  get connected(): boolean {
    return live(this.#session)
  }

  /** Is a connect under way? */
  get connecting(): boolean {
    return this.#connecting !== undefined
  }

  /** All sessions (current and draining) — for counting. */
  sessionCount(): number {
    return (this.connected ? 1 : 0) + this.#draining.size
  }

  /** The next delay before retrying a failed connect (doubling; reset once a session is up). */
  retryDelay(): number {
    return this.#backoff.next()
  }

  /** The current session, connecting if there is none. Rejects with the connect's error. */
  session(): Promise<ClientHttp2Session> {
    const s = this.#session
    if (live(s)) return Promise.resolve(s)
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined
    })
    return this.#connecting
  }

  #connect(): Promise<ClientHttp2Session> {
    const ev = this.#events
    return new Promise<ClientHttp2Session>((resolve, reject) => {
      const session = connect(this.#opts.authority, { ...h2SessionOptions(), ...this.#opts.tls })
      let settled = false
      const fail = (err: Error): void => {
        clearTimeout(timer)
        if (settled) return
        settled = true
        session.destroy()
        ev.connectFailed?.(err)
        reject(err)
      }
      const timer = setTimeout(
        () => fail(new ConnectTimeoutError(this.#opts.connectTimeoutMs)),
        this.#opts.connectTimeoutMs,
      )
      session.once('connect', () => {
        clearTimeout(timer)
        if (settled) return
        settled = true
        widenConnectionWindow(session)
        this.#backoff.reset()
        this.#session = session
        this.#watch(session)
        ev.up?.(session)
        resolve(session)
      })
      session.on('error', (err: Error) => {
        if (!settled) fail(err)
        else ev.error?.(err)
      })
      session.on('goaway', (code: number) => {
        // The peer is draining: keep the in-flight streams, open new ones elsewhere.
        ev.goaway?.(code)
        this.detach(session)
      })
      session.once('close', () => {
        clearTimeout(timer)
        this.#draining.delete(session)
        if (this.#session === session) {
          this.#session = undefined
          ev.down?.()
        }
        if (!settled) fail(new Error('connection closed during handshake'))
      })
    })
  }

  #watch(session: ClientHttp2Session): void {
    const stop = keepAlive(session, this.#opts.keepaliveMs, (why) => {
      if (session.destroyed) return
      this.#events.unresponsive?.(why)
      session.destroy()
    })
    session.once('close', stop)
  }

  /** No new streams on `session`; it ends once its in-flight streams have. */
  detach(session: ClientHttp2Session): void {
    if (this.#session === session) this.#session = undefined
    if (live(session)) {
      this.#draining.add(session)
      session.close()
    }
  }

  /** Ends the current and the draining sessions. */
  close(mode: SessionCloseMode): void {
    const all = [...this.#draining]
    if (this.#session !== undefined) all.push(this.#session)
    this.#session = undefined
    for (const s of all) {
      if (mode === 'cancel') s.destroy(undefined, h2c.NGHTTP2_CANCEL)
      else {
        s.close()
        if (mode === 'goaway-destroy') s.destroy()
      }
    }
  }
}

/** How a stream's open ended ({@link awaitOpen}). */
export type OpenOutcome =
  | { kind: 'ok' }
  /** A non-200 answer and its body (at most `maxBody` bytes of it). */
  | { kind: 'refused'; status: number; body: string }
  | { kind: 'error'; error: Error }
  | { kind: 'closed'; rstCode: number | undefined }
  | { kind: 'timeout' }
  | { kind: 'aborted' }

/** Options for {@link awaitOpen}. */
export interface AwaitOpenOptions {
  /** Gives up after this long without a complete answer (none: no limit). */
  timeoutMs?: number
  /** Cancels the wait. */
  signal?: AbortSignal
  /** The most of a non-200 body kept (default 64 KiB); the rest is read and dropped. */
  maxBody?: number
}

const MAX_ERROR_BODY = 64 * 1024

function ignoreStreamError(): void {}

/**
 * Waits for the answer to a stream just opened: 200, or a non-200 whose body is read to its
 * end, or a failure. Once it settles only a listener that ignores errors is left on the
 * stream (whoever relays it reports them); the caller resets or keeps the stream.
 */
export function awaitOpen(
  req: ClientHttp2Stream,
  options: AwaitOpenOptions = {},
): Promise<OpenOutcome> {
  const { signal, timeoutMs } = options
  const maxBody = options.maxBody ?? MAX_ERROR_BODY
  return new Promise<OpenOutcome>((resolve) => {
    let settled = false
    let timer: NodeJS.Timeout | undefined
    const settle = (outcome: OpenOutcome): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      req.off('response', onResponse)
      req.off('error', onError)
      req.off('close', onClose)
      req.off('data', onData)
      req.off('end', onBodyEnd)
      req.off('close', onBodyEnd)
      // Until the caller's relay listens (or while it resets the stream), an error must not
      // go unhandled. A module-level listener: a closure would keep this scope alive as long
      // as the stream lives.
      req.on('error', ignoreStreamError)
      resolve(outcome)
    }
    let status = 0
    let size = 0
    const chunks: Buffer[] = []
    const onData = (c: Buffer): void => {
      size += c.length
      if (size <= maxBody) chunks.push(c)
    }
    const onBodyEnd = (): void =>
      settle({ kind: 'refused', status, body: Buffer.concat(chunks).toString('utf8') })
    const onResponse = (h: Record<string, string | string[] | number | undefined>): void => {
      status = Number(h[':status'])
      if (status === 200) return settle({ kind: 'ok' })
      // Read the Status body, bounded, then report.
      req.on('data', onData)
      req.once('end', onBodyEnd)
      req.once('close', onBodyEnd)
    }
    const onError = (error: Error): void => settle({ kind: 'error', error })
    const onClose = (): void => settle({ kind: 'closed', rstCode: req.rstCode })
    const onAbort = (): void => settle({ kind: 'aborted' })
    if (timeoutMs !== undefined) timer = setTimeout(() => settle({ kind: 'timeout' }), timeoutMs)
    req.on('response', onResponse)
    req.on('error', onError)
    req.on('close', onClose)
    if (signal !== undefined) {
      if (signal.aborted) onAbort()
      else signal.addEventListener('abort', onAbort, { once: true })
    }
  })
}
