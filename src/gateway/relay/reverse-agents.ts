/**
 * The gateway's agent endpoint for reverse-connected agents: a mutual-TLS listener that
 * agents dial (through a load balancer), and the registry of the agents connected to
 * this replica. On each accepted connection the gateway is the HTTP/2 *client* (roles
 * reversed below TLS, not above): it sends the hello (its replica id and the replica
 * count), learns the node's name from the answer, checks it against the agent's
 * certificate, and from then on opens forwarded streams on the session exactly as on a
 * dial-in session (the agent pool asks {@link ReverseAgents.session}). docs/scaling.md.
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { connect as h2connect, constants as h2c } from 'node:http2'
import type { ClientHttp2Session } from 'node:http2'
import { createServer as createTlsServer, checkServerIdentity } from 'node:tls'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import { describeError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { keepAlive } from '../../shared/keepalive.js'
import { h2SessionOptions, widenConnectionWindow } from '../../protocol/h2-settings.js'
import {
  NODE_NAME_HEADER,
  REPLICA_COUNT_HEADER,
  REPLICA_ID_HEADER,
  REVERSE_HELLO_PATH,
} from '../../protocol/constants.js'

/** A node name as Kubernetes makes them (RFC 1123 subdomain). */
const NODE_NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

/** What the agent endpoint needs. */
export interface ReverseAgentsOptions {
  /** This replica's id (the audit trail's gateway id). */
  replicaId: string
  /** How many replicas agents should hold a connection to. */
  replicas: number
  tls: {
    /** The endpoint's certificate: it must carry the gateway identity the agents allow. */
    cert: string | Buffer
    key: string | Buffer
    /** CA that issued the agents' certificates. */
    ca: string | Buffer
  }
  /** PING interval on each agent connection; 0 disables. */
  keepaliveMs: number
  /** TLS handshake + hello must finish within this. */
  handshakeTimeoutMs: number
  logger: Logger
  /** Called with each agent session once accepted (the buffer budget sets its windows). */
  onSession?: (session: ClientHttp2Session) => void
}

/** One connected agent, as the admin listing shows it. */
export interface ReverseAgentInfo {
  node: string
  remote: string
  connectedAt: string
}

interface Link {
  node: string
  session: ClientHttp2Session
  remote: string
  connectedAt: number
}

/** Events: `change` when an agent connects or disconnects. */
export class ReverseAgents extends EventEmitter {
  readonly #o: ReverseAgentsOptions
  readonly #server: TlsServer
  /** node → its newest accepted session; older ones drain. */
  readonly #links = new Map<string, Link>()
  readonly #all = new Set<ClientHttp2Session>()
  readonly #pending = new Set<TLSSocket>()
  #closed = false

  constructor(options: ReverseAgentsOptions) {
    super()
    this.#o = options
    this.#server = createTlsServer({
      cert: options.tls.cert,
      key: options.tls.key,
      ca: options.tls.ca,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.2',
      handshakeTimeout: options.handshakeTimeoutMs,
    })
    this.#server.on('secureConnection', (socket: TLSSocket) => this.#accept(socket))
    this.#server.on('tlsClientError', (err, socket) => {
      options.logger.debug(
        { err: describeError(err), peer: socket.remoteAddress },
        'agent endpoint: TLS handshake refused',
      )
    })
  }

  /** The accepted session for `node`, if its agent is connected to this replica. */
  session(node: string): ClientHttp2Session | undefined {
    const l = this.#links.get(node)
    if (l === undefined || l.session.closed || l.session.destroyed) return undefined
    return l.session
  }

  /** Connected agents, by node name. */
  list(): ReverseAgentInfo[] {
    return [...this.#links.values()]
      .map((l) => ({
        node: l.node,
        remote: l.remote,
        connectedAt: new Date(l.connectedAt).toISOString(),
      }))
      .sort((a, b) => a.node.localeCompare(b.node))
  }

  /** Number of connected agents. */
  get size(): number {
    return this.#links.size
  }

  listen(port: number, host: string): Promise<{ port: number }> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject)
        const a = this.#server.address()
        if (a === null || typeof a === 'string') return reject(new Error('no address'))
        resolve({ port: a.port })
      })
    })
  }

  #accept(socket: TLSSocket): void {
    const { logger, handshakeTimeoutMs } = this.#o
    const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`
    if (this.#closed || socket.alpnProtocol !== 'h2') {
      socket.destroy()
      return
    }
    this.#pending.add(socket)
    const timer = setTimeout(() => {
      logger.warn({ remote }, 'agent endpoint: no hello answer in time')
      session.destroy()
    }, handshakeTimeoutMs)
    const session = h2connect('https://agent.invalid', {
      ...h2SessionOptions(),
      createConnection: () => socket,
    })
    this.#all.add(session)
    session.on('error', (err) =>
      logger.debug({ remote, err: describeError(err) }, 'reverse agent session error'),
    )
    session.once('close', () => {
      clearTimeout(timer)
      this.#pending.delete(socket)
      this.#all.delete(session)
    })
    const req = session.request(
      {
        ':method': 'POST',
        ':path': REVERSE_HELLO_PATH,
        [REPLICA_ID_HEADER]: this.#o.replicaId,
        [REPLICA_COUNT_HEADER]: String(this.#o.replicas),
      },
      { endStream: true },
    )
    req.on('error', () => undefined)
    req.once('response', (h) => {
      clearTimeout(timer)
      this.#pending.delete(socket)
      req.resume()
      const status = Number(h[':status'])
      const node = h[NODE_NAME_HEADER]
      if (status === 409) {
        // The agent already holds a connection to this replica and closes this one.
        session.close()
        return
      }
      if (
        status !== 200 ||
        typeof node !== 'string' ||
        node.length > 253 ||
        !NODE_NAME_RE.test(node)
      ) {
        logger.warn({ remote, status }, 'agent endpoint: unexpected hello answer')
        session.destroy()
        return
      }
      // The node name comes from the agent but must be one its certificate was issued for,
      // as in dial-in mode where the gateway verifies the node's name on the agent's cert.
      const idErr = checkServerIdentity(node, socket.getPeerCertificate())
      if (idErr !== undefined) {
        logger.warn(
          { remote, node, err: describeError(idErr) },
          'agent endpoint: certificate is not issued for the node it names; refused',
        )
        session.destroy(undefined, h2c.NGHTTP2_REFUSED_STREAM)
        return
      }
      this.#adopt(node, session, remote)
    })
  }

  #adopt(node: string, session: ClientHttp2Session, remote: string): void {
    const { logger } = this.#o
    widenConnectionWindow(session)
    const link: Link = { node, session, remote, connectedAt: Date.now() }
    const previous = this.#links.get(node)
    this.#links.set(node, link)
    // A reconnected agent: its older session keeps its streams and takes no new ones.
    if (previous !== undefined) previous.session.close()
    const stop = keepAlive(session, this.#o.keepaliveMs, (why) => {
      logger.warn({ node, why }, 'reverse agent unresponsive; closing its session')
      session.destroy()
    })
    session.once('close', () => {
      stop()
      if (this.#links.get(node) === link) {
        this.#links.delete(node)
        logger.info({ node, remote }, 'reverse agent disconnected')
        this.emit('change')
      }
    })
    session.on('goaway', () => {
      if (this.#links.get(node) === link) {
        this.#links.delete(node)
        this.emit('change')
      }
    })
    this.#o.onSession?.(session)
    logger.info({ node, remote }, 'reverse agent connected')
    this.emit('change')
  }

  /** Stops accepting; closes sessions gracefully or (`force`) resetting their streams. */
  async close(force: boolean): Promise<void> {
    this.#closed = true
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    for (const s of this.#pending) s.destroy()
    for (const s of this.#all) {
      if (force) s.destroy(undefined, h2c.NGHTTP2_CANCEL)
      else s.close()
    }
    this.#links.clear()
    await closed
  }
}
