/**
 * The gateway's client HTTP/2 sessions: each gets the wide connection window, a PING
 * watchdog (`limits.clientKeepalive`: a client whose link went down says nothing, so
 * PINGs find it and its streams end) and a place in the set shutdown sends GOAWAY to. The
 * set is the native HTTP/2 adapter's {@link EdgeConnection} (edge/native-h2.ts).
 *
 * @module
 */
import type { Http2SecureServer, Http2Session } from 'node:http2'
import { widenConnectionWindow } from '../../protocol/h2-settings.js'
import { describeError } from '../../shared/errors.js'
import { keepAlive } from '../../shared/keepalive.js'
import type { Logger } from '../../shared/log.js'
import type { EdgeConnection } from '../edge/contract.js'

/** What to do with a client that stopped answering PINGs. */
export interface ClientSessionOptions {
  keepaliveMs: number
  logger: Logger
  /** The client did not answer in time (`why`); the session is still open. */
  onUnresponsive(session: Http2Session, why: string): void
}

/** The live client sessions of a server. */
export class ClientSessions implements EdgeConnection {
  readonly #sessions = new Set<Http2Session>()

  constructor(server: Http2SecureServer, options: ClientSessionOptions) {
    const { logger } = options
    server.on('session', (session: Http2Session) => {
      widenConnectionWindow(session)
      this.#sessions.add(session)
      session.on('error', (err) =>
        logger.debug({ err: describeError(err) }, 'client session error'),
      )
      const stopPings = keepAlive(session, options.keepaliveMs, (why) => {
        if (session.destroyed) return
        options.onUnresponsive(session, why)
      })
      session.once('close', () => {
        this.#sessions.delete(session)
        stopPings()
      })
    })
  }

  /** GOAWAY to every client: no new streams; in-flight ones continue. */
  drain(): void {
    for (const s of this.#sessions) if (!s.closed && !s.destroyed) s.close()
  }

  /** Destroys every session. */
  destroy(): void {
    for (const s of this.#sessions) s.destroy()
  }
}
