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

/** One listening socket and the pod port it forwards to. */
export interface Listener {
  server: Server
  address: string
  localPort: number
  remotePort: number
}

/** A local port (0: any free one) and the pod port it forwards to. */
export interface PortPair {
  local: number
  remote: number
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
async function listenPair(
  pair: PortPair,
  addresses: string[],
  warn: (line: string) => void,
): Promise<Listener[]> {
  let bound: Listener[] = []
  for (let attempt = 0; attempt < 5 && bound.length === 0; attempt++) {
    let port = pair.local
    const errors: string[] = []
    for (const address of addresses) {
      try {
        const server = await listenOn(address, port)
        const a = server.address()
        port = typeof a === 'object' && a !== null ? a.port : port
        bound.push({ server, address, localPort: port, remotePort: pair.remote })
      } catch (e) {
        errors.push(`${formatHostPort(address, port)}: ${describeError(e)}`)
        if (pair.local === 0 && bound.length > 0) break // picked port busy elsewhere: retry
      }
    }
    if (
      pair.local === 0 &&
      bound.length > 0 &&
      bound.length < addresses.length &&
      errors.some((x) => x.includes('EADDRINUSE'))
    ) {
      await Promise.all(bound.map((l) => closeServer(l.server)))
      bound = []
      continue
    }
    if (bound.length === 0) {
      throw appError(
        'PFG_ERR_CLI_LISTEN',
        `unable to listen on any of the requested ports: ${errors.join('; ')}`,
      )
    }
    for (const e of errors) warn(`Unable to listen on ${e}`)
  }
  return bound
}

/**
 * Listens for every pair on every address. Rejects (`PFG_ERR_CLI_LISTEN`) when a pair
 * could not be bound anywhere, after closing what was bound.
 */
export async function listenAll(
  pairs: PortPair[],
  addresses: string[],
  warn: (line: string) => void,
): Promise<Listener[]> {
  const listeners: Listener[] = []
  try {
    for (const pair of pairs) listeners.push(...(await listenPair(pair, addresses, warn)))
  } catch (e) {
    await Promise.all(listeners.map((l) => closeServer(l.server)))
    throw e
  }
  return listeners
}
