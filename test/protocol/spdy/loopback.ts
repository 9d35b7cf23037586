/**
 * Loopback plumbing shared by the SPDY tests: a real TCP connection with a
 * SpdySession on the server end and the test client on the other.
 *
 * @module
 */
import net from 'node:net'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { SpdySession } from '../../../src/protocol/spdy/session.js'
import type { SpdySessionOptions, SpdyStream } from '../../../src/protocol/spdy/session.js'
import { SpdyTestClient } from './spdy-test-client.js'

export interface Pair {
  session: SpdySession
  client: SpdyTestClient
  serverSocket: net.Socket
  clientSocket: net.Socket
  streams: SpdyStream[]
  nextStream(): Promise<SpdyStream>
  closed: Promise<Error | undefined>
}

/** A SpdySession on a real loopback TCP connection, with the test client on the other end. */
export async function connect(
  t: { after: (fn: () => unknown) => void },
  options: SpdySessionOptions = {},
  onStream?: (s: SpdyStream) => void,
): Promise<Pair> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const accepted = once(server, 'connection') as Promise<[net.Socket]>
  const clientSocket = net.connect(port, '127.0.0.1')
  await once(clientSocket, 'connect')
  const [serverSocket] = await accepted
  server.close()
  const session = new SpdySession(serverSocket, options)
  const streams: SpdyStream[] = []
  const waiters: ((s: SpdyStream) => void)[] = []
  session.on('stream', (s) => {
    streams.push(s)
    if (onStream) onStream(s)
    waiters.shift()?.(s)
  })
  const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve))
  const client = new SpdyTestClient(clientSocket)
  t.after(() => {
    clientSocket.destroy()
    serverSocket.destroy()
  })
  let seen = 0
  return {
    session,
    client,
    serverSocket,
    clientSocket,
    streams,
    closed,
    nextStream: () =>
      new Promise((resolve) => {
        if (streams.length > seen) resolve(streams[seen++]!)
        else
          waiters.push((s) => {
            seen++
            resolve(s)
          })
      }),
  }
}

export const pfHeaders = (type: string, id = '0'): Record<string, string> => ({
  streamtype: type,
  port: '5000',
  requestid: id,
})

/** Resolves when a stream has emitted 'close' (at once if it already has). */
export function whenClosed(s: SpdyStream): Promise<void> {
  if (s.closed) return Promise.resolve()
  return once(s, 'close').then(() => undefined)
}

export function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

export async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}
