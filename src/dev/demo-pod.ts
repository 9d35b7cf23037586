/**
 * `pfgate demo-pod --kind echo|http --listen HOST:PORT [...]`: the dev cluster's
 * demo pods. `echo` sends every byte back and honours half-close (it ends its side
 * once the client has ended its own and everything was echoed); `http` answers
 * every request with a small page naming the pod.
 *
 * @module
 */
import { createServer as createHttpServer } from 'node:http'
import { createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { parseArgs } from 'node:util'

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
  'usage: pfgate demo-pod --kind echo|http --name NAME --listen HOST:PORT [--listen ...]\n'

/** The kinds of demo pod; both serve TCP (there is no UDP pod: port-forward is TCP only). */
const KINDS = ['echo', 'http'] as const

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
  // Like a container being stopped: listeners close, open connections end.
  const closed = Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  for (const c of open) c.destroy()
  await closed
  return 0
}
