/**
 * Test helpers: real TCP clients that push random bytes through an echo path and
 * check what came back; a TCP proxy whose links can be cut like a lost network.
 */
import { createHash, randomBytes } from 'node:crypto'
import { connect, createServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'

/** sha256 hex. */
export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

/** Connects to host:port. */
export function dial(port: number, host = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host, allowHalfOpen: true })
    s.once('connect', () => {
      s.off('error', reject)
      resolve(s)
    })
    s.once('error', reject)
  })
}

/**
 * Sends `size` random bytes, half-closes (FIN), and reads until the peer ends.
 * Resolves with the sha256 of what was sent and what came back.
 */
export async function echoRoundTrip(
  port: number,
  size: number,
  host = '127.0.0.1',
  timeoutMs = 60_000,
): Promise<{ sent: string; received: string; receivedBytes: number }> {
  const data = randomBytes(size)
  const s = await dial(port, host)
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let n = 0
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`echo of ${size} bytes timed out after ${timeoutMs} ms (${n} received)`))
    }, timeoutMs)
    s.on('data', (c: Buffer) => {
      chunks.push(c)
      n += c.length
    })
    s.once('end', () => {
      clearTimeout(timer)
      s.end()
      resolve({ sent: sha256(data), received: sha256(Buffer.concat(chunks)), receivedBytes: n })
    })
    s.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    s.end(data)
  })
}

/** Resolves when `fn` returns true, polling; rejects after the timeout. */
export async function eventually(
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const start = Date.now()
  for (;;) {
    if (await fn()) return
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Resolves true if a TCP connect to host:port is refused. */
export function isRefused(port: number, host = '127.0.0.1'): Promise<boolean> {
  return dial(port, host).then(
    (s) => {
      s.destroy()
      return false
    },
    (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED',
  )
}

/** A TCP proxy whose links can be cut the way a lost network cuts them. */
export interface FreezableProxy {
  port: number
  /** Upstream (target-side) sockets, one per accepted connection. */
  readonly upstreams: Socket[]
  /** Stops relaying both ways on every link, without a FIN or an RST: nothing is closed. */
  freeze(): void
  close(): Promise<void>
}

/**
 * A TCP proxy to 127.0.0.1:`target`. After {@link FreezableProxy.freeze} neither side hears
 * from the other again and no connection is closed: to the target, the client vanished.
 */
export async function startFreezableProxy(target: number): Promise<FreezableProxy> {
  const links: [Socket, Socket][] = []
  const upstreams: Socket[] = []
  const server = createServer((client) => {
    const up = connect({ port: target, host: '127.0.0.1' })
    for (const s of [client, up]) s.on('error', () => undefined)
    client.pipe(up)
    up.pipe(client)
    client.once('close', () => up.destroy())
    up.once('close', () => client.destroy())
    links.push([client, up])
    upstreams.push(up)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    upstreams,
    freeze() {
      for (const [client, up] of links) {
        client.unpipe(up)
        up.unpipe(client)
        client.pause()
        up.pause()
        // A closed side must not close the other either.
        client.removeAllListeners('close')
        up.removeAllListeners('close')
      }
    },
    async close() {
      for (const [client, up] of links) {
        client.destroy()
        up.destroy()
      }
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
