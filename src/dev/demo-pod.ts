/**
 * `pfgate demo-pod --kind echo|http|udp --listen HOST:PORT [...]`: the dev cluster's
 * demo pods. `echo` sends every byte back and honours half-close (it ends its side
 * once the client has ended its own and everything was echoed); `http` answers
 * every request with a small page naming the pod; `udp` listens on UDP and answers
 * every datagram: a DNS query (one question) with a DNS answer (`dnsAnswer`), anything
 * else with the datagram itself (an echo).
 *
 * @module
 */
import { createServer as createHttpServer } from 'node:http'
import { createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { parseArgs } from 'node:util'
import { createSocket } from 'node:dgram'
import type { Socket as UdpSocket } from 'node:dgram'
import { isIP } from 'node:net'

/** Starts an echo server; resolves with its port. */
export function startEcho(host: string, port: number): Promise<Server> {
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket: Socket) => {
    socket.on('error', () => socket.destroy())
    // pipe() ends the write side after the read side ended: the echo's half-close.
    socket.pipe(socket)
  })
  return listen(server, host, port)
}

/** Starts an HTTP server that names the pod. */
export function startHttp(host: string, port: number, name: string): Promise<Server> {
  const server = createHttpServer((req, res) => {
    const body = `hello from ${name}: ${req.method ?? 'GET'} ${req.url ?? '/'}\n`
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  return listen(server, host, port)
}

/** The address every `A` query under `.internal` gets (TEST-NET-1, RFC 5737). */
export const DEMO_DNS_ADDRESS = [192, 0, 2, 10] as const

/**
 * A DNS answer to `query` when it is one (RFC 1035 §4.1: a query with one question):
 * names under `internal.` get an `A` record {@link DEMO_DNS_ADDRESS} (TTL 60) for type A,
 * no records for other types; other names get NXDOMAIN. `undefined` when `query` is not a
 * DNS query (the caller echoes it).
 */
export function dnsAnswer(query: Buffer): Buffer | undefined {
  if (query.length < 17 || query.length > 512) return undefined
  const flags = query.readUInt16BE(2)
  if ((flags & 0x8000) !== 0 || ((flags >> 11) & 0xf) !== 0) return undefined // not a QUERY
  if (query.readUInt16BE(4) !== 1 || query.readUInt16BE(6) !== 0 || query.readUInt16BE(8) !== 0)
    return undefined
  const labels: string[] = []
  let off = 12
  for (;;) {
    const len = query[off]
    if (len === undefined || len > 63) return undefined
    off++
    if (len === 0) break
    if (off + len > query.length) return undefined
    labels.push(
      query
        .subarray(off, off + len)
        .toString('latin1')
        .toLowerCase(),
    )
    off += len
  }
  if (off + 4 > query.length) return undefined
  const qtype = query.readUInt16BE(off)
  const question = query.subarray(12, off + 4)
  const known = labels.length >= 2 && labels[labels.length - 1] === 'internal'
  const answer =
    known && qtype === 1
      ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...DEMO_DNS_ADDRESS])
      : Buffer.alloc(0)
  const header = Buffer.alloc(12)
  query.copy(header, 0, 0, 2) // id
  // QR, the query's RD, RA; RCODE 3 (NXDOMAIN) for unknown names.
  header.writeUInt16BE(0x8000 | (flags & 0x0100) | 0x0080 | (known ? 0 : 3), 2)
  header.writeUInt16BE(1, 4)
  header.writeUInt16BE(answer.length > 0 ? 1 : 0, 6)
  return Buffer.concat([header, question, answer])
}

/** Starts a UDP responder (DNS answers, else echo) on `host:port`. */
export function startUdp(host: string, port: number): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(
      isIP(host) === 6 ? { type: 'udp6', ipv6Only: true } : { type: 'udp4' },
    )
    socket.on('message', (msg, rinfo) => {
      socket.send(dnsAnswer(msg) ?? msg, rinfo.port, rinfo.address)
    })
    socket.once('error', reject)
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off('error', reject)
      socket.on('error', () => {}) // a client's ICMP error must not end the pod
      resolve(socket)
    })
  })
}

function listen(server: Server, host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', reject)
      resolve(server)
    })
  })
}

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value)
  if (m === null || Number(m[3]) > 65535) {
    throw new RangeError(`--listen ${value}: expected HOST:PORT`)
  }
  return { host: (m[1] ?? m[2]) as string, port: Number(m[3]) }
}

const DEMO_POD_USAGE =
  'usage: pfgate demo-pod --kind echo|http|udp --name NAME --listen HOST:PORT [--listen ...]\n'

/** The kinds of demo pod: `echo` and `http` serve TCP, `udp` serves UDP. */
const KINDS = ['echo', 'http', 'udp'] as const

/** Announces the bound ports (to the supervisor, or on stdout) and waits for a stop signal. */
async function announceAndWait(ports: number[]): Promise<void> {
  // Listen for the stop signals before announcing the ports: whoever reads the
  // announcement may signal at once (the reader's wake-up can preempt this process).
  const stopped = new Promise<void>((resolve) => {
    const stop = (): void => resolve()
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
    process.once('disconnect', stop)
  })
  if (process.send !== undefined) {
    process.send({ type: 'listening', ports })
    // The supervisor's IPC channel must not keep this process alive after a shutdown.
    process.channel?.unref()
  } else {
    process.stdout.write(JSON.stringify({ ports }) + '\n')
  }
  await stopped
}

/** The `udp` kind: a responder per address, until stopped. */
async function runUdp(listens: { host: string; port: number }[]): Promise<number> {
  const sockets: UdpSocket[] = []
  for (const { host, port } of listens) sockets.push(await startUdp(host, port))
  await announceAndWait(sockets.map((s) => s.address().port))
  for (const s of sockets) s.close()
  return 0
}

/** Entry point. */
export async function main(argv: string[]): Promise<number> {
  let values
  let listens: { host: string; port: number }[]
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        kind: { type: 'string', default: 'echo' },
        listen: { type: 'string', multiple: true, default: [] },
        name: { type: 'string', default: 'demo' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
    if (values.help === true) {
      process.stdout.write(DEMO_POD_USAGE)
      return 0
    }
    if (!(KINDS as readonly string[]).includes(values.kind)) {
      throw new RangeError(`--kind ${values.kind}: must be ${KINDS.join(' or ')}`)
    }
    if (values.listen.length === 0) throw new RangeError('at least one --listen is required')
    listens = values.listen.map(parseListen)
  } catch (err) {
    process.stderr.write(`error: ${(err as Error).message}\n${DEMO_POD_USAGE}`)
    return 2
  }
  if (values.kind === 'udp') return runUdp(listens)
  const servers: Server[] = []
  for (const { host, port } of listens) {
    servers.push(
      values.kind === 'http'
        ? await startHttp(host, port, values.name)
        : await startEcho(host, port),
    )
  }
  const ports = servers.map((s) => {
    const a = s.address()
    return typeof a === 'object' && a !== null ? a.port : 0
  })
  const open = new Set<Socket>()
  for (const s of servers) {
    s.on('connection', (c: Socket) => {
      open.add(c)
      c.once('close', () => open.delete(c))
    })
  }
  await announceAndWait(ports)
  // Like a container being stopped: listeners close, open connections end.
  const closed = Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  for (const c of open) c.destroy()
  await closed
  return 0
}
