/**
 * `pfgate port-forward` step 4, serve: each local connection becomes one stream to the
 * pod, opened by a {@link StreamDialer} (the gateway's, or a fake in tests), relayed both
 * ways until either side ends. A failed open ends only that local connection.
 *
 * @module
 */
import type { Socket } from 'node:net'
import { DuplexRelay } from '../../shared/duplex-relay.js'
import type { RelayEndpoint } from '../../shared/duplex-relay.js'
import { describeError } from '../../shared/errors.js'
import { socketEndpoint } from '../../shared/relay-endpoints.js'
import { closeServer } from './listen.js'
import type { Listener } from './listen.js'

/** One open stream to the pod's port. */
export interface PodStream {
  /** The relay's end on the pod's side. */
  readonly endpoint: RelayEndpoint
  /** Drops the stream unused (the local client left while it opened). */
  cancel(): void
  /** How the stream was reset by the far side (e.g. `stream reset (REFUSED_STREAM)`), if it was. */
  resetDescription(): string | undefined
}

/** Opens streams to the pod. */
export interface StreamDialer {
  /** Opens a stream to the pod's `remotePort`; rejects with an error whose message is for the user. */
  dial(remotePort: number | string): Promise<PodStream>
}

/** Options for {@link serve}. */
export interface ServeOptions {
  /** No `Handling connection` line per connection. */
  quiet: boolean
  /** A line for stderr. */
  log: (line: string) => void
}

/** Serving listeners; {@link stop} ends everything. */
export interface Serving {
  /** Resets every stream, closes every local connection, then the listeners. */
  stop(): Promise<void>
}

/** Serves every listener's connections through `dialer`. */
export function serve(listeners: Listener[], dialer: StreamDialer, options: ServeOptions): Serving {
  const sockets = new Set<Socket>()
  const relays = new Set<DuplexRelay>()
  let stopping = false
  const { log } = options

  const open = async (socket: Socket, l: Listener): Promise<void> => {
    let pod: PodStream
    try {
      pod = await dialer.dial(l.remotePort)
    } catch (e) {
      log(`an error occurred forwarding ${l.localPort} -> ${l.remotePort}: ${describeError(e)}`)
      // Only this local connection ends; the listeners keep serving.
      if (!socket.destroyed) socket.destroy()
      return
    }
    if (socket.destroyed || stopping) {
      pod.cancel()
      return
    }
    const relay = new DuplexRelay(socketEndpoint(socket), pod.endpoint, {
      onDone(outcome) {
        relays.delete(relay)
        const f = outcome.failure
        if (f !== undefined && f.side === 'b' && !stopping) {
          log(
            `error: connection for ${l.localPort} -> ${l.remotePort} ended abnormally: ${
              pod.resetDescription() ?? describeError(f.error ?? f.reason)
            }`,
          )
        }
      },
    })
    relays.add(relay)
  }

  const handle = (socket: Socket, l: Listener): void => {
    if (stopping) {
      socket.destroy()
      return
    }
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.on('error', () => {
      // The relay reports it; a reset local client must not crash the CLI.
    })
    if (!options.quiet) log(`Handling connection for ${l.localPort}`)
    void open(socket, l)
  }
  for (const l of listeners) l.server.on('connection', (socket: Socket) => handle(socket, l))

  return {
    async stop() {
      stopping = true
      // server.close() waits for open connections, so end those first: every stream is
      // reset (the gateway records it), every local socket closed, then the listeners.
      const closing = listeners.map((l) => closeServer(l.server))
      for (const r of relays) r.abort('gateway')
      for (const s of sockets) s.destroy()
      await Promise.all(closing)
    },
  }
}
