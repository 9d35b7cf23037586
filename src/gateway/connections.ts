/**
 * The gateway's client connections as TCP and TLS sockets, whatever they carry
 * (HTTP/2, HTTP/1.1, an upgraded SPDY or WebSocket connection): what shutdown needs to
 * end a connection whose peer never reads or never closes.
 *
 * Node's HTTP/2 session, once closed with GOAWAY, ends its socket and then waits for the
 * peer to close (it destroys the socket only for a session that was never closed): a
 * peer that stops reading, or vanishes, kept `server.close()` waiting for minutes. At
 * the drain deadline {@link ConnectionTracker.destroyAll} destroys every socket.
 *
 * @module
 */
import type { Socket } from 'node:net'
import type { Server as TlsServer, TLSSocket } from 'node:tls'

/** Every client connection of one gateway server, from accept to close. */
export class ConnectionTracker {
  /** Accepted TCP sockets (before and after their TLS handshake). */
  readonly #raw = new Set<Socket>()
  /** TLS sockets whose handshake completed. */
  readonly #tls = new Set<TLSSocket>()

  /** Starts tracking `server`'s connections. */
  constructor(server: TlsServer) {
    server.on('connection', (socket: Socket) => {
      this.#raw.add(socket)
      socket.once('close', () => this.#raw.delete(socket))
    })
    server.on('secureConnection', (socket: TLSSocket) => {
      this.#tls.add(socket)
      socket.once('close', () => this.#tls.delete(socket))
    })
  }

  /** Open connections (accepted TCP sockets not yet closed). */
  get size(): number {
    return this.#raw.size
  }

  /** Destroys every connection now (shutdown, at the drain deadline). */
  destroyAll(): void {
    for (const s of [...this.#tls]) s.destroy()
    for (const s of [...this.#raw]) s.destroy()
  }
}
