/**
 * Reverse mode: the agent dials the gateway's agent endpoint (through a load balancer)
 * over mutual TLS and serves HTTP/2 on the connection it opened, so the gateway opens
 * forwarded streams exactly as in dial-in mode while nothing listens on the node.
 *
 * Several replicas: each connection's hello names its replica and how many replicas
 * there are; the agent keeps dialing the one address until it holds a connection to
 * that many distinct replicas (a dial that lands on a replica it already holds is
 * declined and closed), with backoff and jitter between dials that did not add one,
 * and checks again every `resyncMs` (docs/scaling.md).
 *
 * @module
 */
import { connect as tlsConnect } from 'node:tls'
import type { TLSSocket } from 'node:tls'
import type { ServerHttp2Session } from 'node:http2'
import { Backoff } from '../shared/backoff.js'
import { describeError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { keepAlive } from '../shared/keepalive.js'
import { peerIdentities } from '../shared/h2-util.js'
import type { AgentServer } from './app.js'
import type { ReverseConfig } from './config.js'

/** What the connector needs. */
export interface ReverseConnectorOptions {
  agent: AgentServer
  config: ReverseConfig
  tls: { cert: string | Buffer; key: string | Buffer; ca: string | Buffer }
  /** Identities the gateway's certificate must carry one of (the agent's allowedClients). */
  allowedServers: readonly string[]
  logger: Logger
  /** How long a dial may take from TCP connect to the gateway's hello (default 10 s). */
  handshakeTimeoutMs?: number
}

/** One reverse connection that the gateway accepted. */
export interface ReverseLink {
  replicaId: string
  session: ServerHttp2Session
  connectedAt: number
}

type DialResult = 'added' | 'duplicate'

/** Keeps connections to every gateway replica; see the module comment. */
export class ReverseConnector {
  readonly #o: ReverseConnectorOptions
  readonly #links = new Map<string, ReverseLink>()
  readonly #backoff: Backoff
  #target = 1
  #closed = false
  #wake: (() => void) | undefined
  #loop: Promise<void> | undefined
  /** Sockets of dials in progress (closed on shutdown). */
  readonly #dialing = new Set<TLSSocket>()

  constructor(options: ReverseConnectorOptions) {
    this.#o = options
    this.#backoff = new Backoff({
      initialMs: options.config.backoffInitialMs,
      maxMs: options.config.backoffMaxMs,
    })
  }

  /** Connected replicas (by id). */
  links(): ReverseLink[] {
    return [...this.#links.values()]
  }

  /** Replicas the last hello said there are. */
  get target(): number {
    return this.#target
  }

  /** Starts the dial loop. */
  start(): void {
    this.#loop ??= this.#run()
  }

  async #run(): Promise<void> {
    const log = this.#o.logger
    while (!this.#closed) {
      if (this.#links.size >= this.#target) {
        await this.#sleep(this.#o.config.resyncMs)
        if (this.#links.size >= this.#target) {
          // A full set: dial once more to learn whether the replica count changed.
          if (this.#closed) break
        } else continue
      }
      let delay: number
      try {
        const result = await this.#dialOnce()
        if (result === 'added') {
          this.#backoff.reset()
          continue
        }
        delay = this.#backoff.next()
        log.debug({ delay }, 'reverse dial reached a replica already connected')
      } catch (err) {
        delay = this.#backoff.next()
        log.warn(
          { err: describeError(err), retryInMs: delay, connected: this.#links.size },
          'reverse dial to the gateway failed',
        )
      }
      await this.#sleep(delay)
    }
  }

  /** Waits `ms`, or less when a connection closes or the connector stops. */
  #sleep(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      function done(): void {
        clearTimeout(timer)
        resolve()
      }
      this.#wake = () => {
        this.#wake = undefined
        done()
      }
    })
  }

  #dialOnce(): Promise<DialResult> {
    const { config, tls, agent, logger } = this.#o
    const timeoutMs = this.#o.handshakeTimeoutMs ?? 10_000
    return new Promise<DialResult>((resolve, reject) => {
      const socket = tlsConnect({
        host: config.host,
        port: config.port,
        servername: config.serverName ?? (isIpLiteral(config.host) ? undefined : config.host),
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        ALPNProtocols: ['h2'],
        minVersion: 'TLSv1.2',
        // The gateway's identity is its certificate's URI SAN (checked below), not the
        // load balancer's host name.
        checkServerIdentity: () => undefined,
      })
      this.#dialing.add(socket)
      let settled = false
      const settle = (err: Error | undefined, result?: DialResult): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.#dialing.delete(socket)
        if (err !== undefined) {
          socket.destroy()
          reject(err)
        } else resolve(result as DialResult)
      }
      const timer = setTimeout(
        () => settle(new Error(`no hello from the gateway within ${timeoutMs} ms`)),
        timeoutMs,
      )
      socket.once('error', (err: Error) => settle(err))
      socket.once('close', () => settle(new Error('connection closed before the hello')))
      socket.once('secureConnect', () => {
        const ids = peerIdentities(socket)
        if (!socket.authorized || !ids.some((id) => this.#o.allowedServers.includes(id))) {
          settle(new Error(`the endpoint is not the gateway (identities: ${ids.join(', ')})`))
          return
        }
        if (socket.alpnProtocol !== 'h2') {
          settle(new Error('the gateway did not negotiate h2'))
          return
        }
        let session: ServerHttp2Session | undefined = undefined
        session = agent.acceptReverse(socket, ({ replicaId, replicas }) => {
          this.#target = replicas
          if (this.#closed || this.#links.has(replicaId) || session === undefined) {
            // Declined: the gateway sees 409; we close once the answer is out.
            const s = session
            setImmediate(() => s?.close())
            settle(undefined, 'duplicate')
            return false
          }
          this.#adopt(replicaId, session)
          settle(undefined, 'added')
          return true
        })
        session.on('error', (err) => logger.debug({ err: describeError(err) }, 'reverse session'))
      })
    })
  }

  #adopt(replicaId: string, session: ServerHttp2Session): void {
    const { logger, config } = this.#o
    const link: ReverseLink = { replicaId, session, connectedAt: Date.now() }
    this.#links.set(replicaId, link)
    logger.info(
      { replica: replicaId, connected: this.#links.size, replicas: this.#target },
      'connected to a gateway replica',
    )
    const stop = keepAlive(session, config.keepaliveMs, (why) => {
      logger.warn({ replica: replicaId, why }, 'gateway replica unresponsive; dropping connection')
      session.destroy()
    })
    session.once('close', () => {
      stop()
      if (this.#links.get(replicaId) === link) this.#links.delete(replicaId)
      if (!this.#closed) {
        logger.info({ replica: replicaId }, 'connection to a gateway replica closed')
        this.#wake?.()
      }
    })
  }

  /** Stops dialing; the sessions themselves are closed by the agent server's close(). */
  async close(): Promise<void> {
    this.#closed = true
    for (const s of this.#dialing) s.destroy()
    this.#wake?.()
    await this.#loop
  }
}

function isIpLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(':')
}
