/**
 * `pfgate port-forward` step 3, listen: every local port on every local address, before
 * anything is served. A port picked by the system (`:5000`) is picked on the first address
 * and reused on the others (retried when it is busy on one of them).
 *
 * @module
 */
import { createServer, isIP } from 'node:net'
import type { Server } from 'node:net'
import { appError, describeError } from '../../shared/errors.js'
import type { ListenAddress } from './args.js'

/** One listening socket and the pod port it forwards to. */
export interface Listener {
  server: Server
  address: string
  localPort: number
  /** A pod's port; for a service or workload, the port asked for (number or name). */
  remotePort: number | string
}

/** A local port (0: any free one) and the pod port it forwards to. */
export interface PortPair {
  local: number
  remote: number | string
}

/** `host:port`, IPv6 in brackets. */
export function formatHostPort(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`
}

function listenOn(address: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true })
    server.once('error', reject)
    server.listen({ host: address, port, ipv6Only: isIP(address) === 6, exclusive: true }, () => {
      server.off('error', reject)
      resolve(server)
    })
  })
}

/** Closes a listening socket; resolves once its connections are gone too. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/** Binds one pair on every address; `warn` gets each address that could not be bound. */
/**
 * Binds one port on every address (a free port, picked on the first address and reused on
 * the others, when `local` is 0). Returns the listeners, or the error that fails the port
 * (kubectl's rule: see {@link ListenAddress}); a tolerated failure is reported with `warn`.
 */
async function listenPair(
  pair: PortPair,
  addresses: ListenAddress[],
  warn: (line: string) => void,
): Promise<Listener[] | Error> {
  for (let attempt = 0; attempt < 5; attempt++) {
    let port = pair.local
    const bound: Listener[] = []
    const errors: { text: string; mode: ListenAddress['failureMode']; inUse: boolean }[] = []
    for (const { address, failureMode } of addresses) {
      try {
        const server = await listenOn(address, port)
        const a = server.address()
        port = typeof a === 'object' && a !== null ? a.port : port
        bound.push({ server, address, localPort: port, remotePort: pair.remote })
      } catch (e) {
        errors.push({
          text: `unable to create listener: Error listen ${formatHostPort(address, port)}: ${describeError(e)}`,
          mode: failureMode,
          inUse: (e as { code?: string }).code === 'EADDRINUSE',
        })
      }
    }
    const failed = bound.length === 0 || errors.some((e) => e.mode === 'any')
    if (failed && pair.local === 0 && bound.length > 0 && errors.some((e) => e.inUse)) {
      // The port picked on the first address is taken on another: pick again.
      await Promise.all(bound.map((l) => closeServer(l.server)))
      continue
    }
    if (failed) {
      await Promise.all(bound.map((l) => closeServer(l.server)))
      return new Error(
        `Listeners failed to create with the following errors: [${errors.map((e) => e.text).join(' ')}]`,
      )
    }
    for (const e of errors) warn(`Unable to listen on ${e.text}`)
    return bound
  }
  return new Error('no free port was found on every address')
}

/**
 * Listens on every pair, as kubectl: a port that cannot be bound is reported
 * (`Unable to listen on port N: …`) and skipped; only when no port at all could be bound
 * does it throw (`unable to listen on any of the requested ports`).
 */
export async function listenAll(
  pairs: PortPair[],
  addresses: ListenAddress[],
  warn: (line: string) => void,
): Promise<Listener[]> {
  const listeners: Listener[] = []
  for (const pair of pairs) {
    const bound = await listenPair(pair, addresses, warn)
    if (bound instanceof Error) warn(`Unable to listen on port ${pair.local}: ${bound.message}`)
    else listeners.push(...bound)
  }
  if (listeners.length === 0) {
    throw appError(
      'PFG_ERR_CLI_LISTEN',
      `unable to listen on any of the requested ports: ${pairs.map((p) => `${p.local}:${p.remote}`).join(', ')}`,
    )
  }
  return listeners
}
