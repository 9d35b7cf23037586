/**
 * One hop of the minimal Node HTTP/2 chains (bench/node-h2-chain.ts): pfgate's three hops
 * shaped as pfgate shapes them — one shared HTTP/2 session per link, a stream per
 * connection, 200 once the next hop answered 200 — with nothing else: no audit, no
 * authentication or authorization, no limits, no metrics, plain `pipe()` both ways with
 * half-close. The HTTP/2 settings (windows, frame size, stream high-water mark) are
 * pfgate's (src/protocol/h2-settings.ts, the constants only); the TLS material is the dev
 * PKI the bench already uses.
 *
 * `node dist/bench/node-h2-chain-hop.js ROLE LISTEN_PORT NEXT_PORT PKI_DIR [POOL_SIZE [MODE]]`:
 * - `forwarder`: clear TCP in; a stream per connection on ONE HTTP/2 session over TLS to
 *   the gateway (verifying its certificate), like the CLI;
 * - `gateway`: HTTP/2 over TLS in (the gateway's certificate); a stream per stream on ONE
 *   HTTP/2 session over mutual TLS to the agent (the gateway's client certificate); answers
 *   200 after the agent's 200, like the gateway;
 * - `agent`: HTTP/2 over mutual TLS in (the node's certificate, client certificates
 *   required); a TCP connection to the target per stream, 200 once connected, like the agent;
 * - `gateway-pool`: the gateway's front, but the agent leg is a pool of POOL_SIZE (default 8)
 *   pre-established mutual-TLS connections, one per stream: a stream takes a ready socket,
 *   sends the target as one line, waits for the agent's one status byte (0: connected),
 *   answers 200 and pipes; the pool refills in the background (MODE: see PoolMode). It
 *   listens once the pool is full; SIGUSR2 prints how many handshakes resumed a session;
 * - `agent-pool`: mutual TLS in; reads the target line, connects, answers the status byte,
 *   pipes.
 * Prints `listening` on stdout once it accepts connections.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import http2 from 'node:http2'
import type {
  ClientHttp2Session,
  ClientHttp2Stream,
  SecureServerOptions,
  ServerHttp2Stream,
} from 'node:http2'
import net from 'node:net'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { setDefaultHighWaterMark } from 'node:stream'
import tls from 'node:tls'
import type { TLSSocket } from 'node:tls'
import { join2 } from './join-pipes.js'
import {
  CONNECTION_WINDOW,
  MAX_CONCURRENT_STREAMS,
  MAX_FRAME_SIZE,
  MAX_SESSION_MEMORY_MB,
  STREAM_HIGH_WATER_MARK,
  STREAM_WINDOW,
} from '../src/protocol/h2-settings.js'

const ROLES = ['forwarder', 'gateway', 'agent', 'gateway-pool', 'agent-pool'] as const
type Role = (typeof ROLES)[number]

const [role, listenArg, nextArg, pkiDir, poolArg] = process.argv.slice(2) as [
  Role,
  string,
  string,
  string,
  string | undefined,
]
if (!ROLES.includes(role) || pkiDir === undefined) {
  process.stderr.write(
    `usage: node-h2-chain-hop.js ${ROLES.join('|')} LISTEN NEXT PKI_DIR [POOL [refill|resume|prefill]]\n`,
  )
  process.exit(2)
}
const pem = (name: string): Buffer => readFileSync(join(pkiDir, name))
const nextPort = Number(nextArg)
const poolSize = Number(poolArg ?? 8)
const poolMode = (process.argv[7] ?? 'refill') as PoolMode

// pfgate's byte streams relay with this high-water mark (the CLI, gateway and agent set it).
setDefaultHighWaterMark(false, STREAM_HIGH_WATER_MARK)

/** pfgate's SETTINGS and session options (src/protocol/h2-settings.ts), written out. */
const h2Options = {
  settings: {
    initialWindowSize: STREAM_WINDOW,
    maxFrameSize: MAX_FRAME_SIZE,
    maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
    enablePush: false,
  },
  maxSessionMemory: MAX_SESSION_MEMORY_MB,
}

/** The one shared HTTP/2 session to the next hop (reconnected when it goes). */
function sharedSession(options: tls.ConnectionOptions): () => ClientHttp2Session {
  let session: ClientHttp2Session | undefined
  return () => {
    if (session !== undefined && !session.closed && !session.destroyed) return session
    const s = http2.connect(`https://127.0.0.1:${nextPort}`, {
      ...h2Options,
      ...options,
      minVersion: 'TLSv1.2',
    })
    s.once('connect', () => s.setLocalWindowSize(CONNECTION_WINDOW))
    s.on('error', () => {
      // the streams on it fail with it; the next stream reconnects
    })
    s.once('close', () => {
      if (session === s) session = undefined
    })
    session = s
    return s
  }
}

/** Opens a stream on `session` and calls `ok` with it after a 200, `fail` otherwise. */
function openStream(
  session: ClientHttp2Session,
  ok: (s: ClientHttp2Stream) => void,
  fail: (status: number) => void,
): void {
  const req = session.request({ ':method': 'POST', ':path': '/forward' }, { endStream: false })
  req.once('response', (h) => {
    const status = Number(h[':status'])
    if (status === 200) ok(req)
    else {
      req.close(http2.constants.NGHTTP2_CANCEL)
      fail(status)
    }
  })
  req.once('error', () => fail(502))
}

/** A server stream answered with an error and ended. */
function refuse(stream: ServerHttp2Stream, status: number): void {
  if (stream.destroyed) return
  if (!stream.headersSent) stream.respond({ ':status': status }, { endStream: true })
  else stream.close(http2.constants.NGHTTP2_CANCEL)
}

function serverOptions(agentSide: boolean): SecureServerOptions {
  return {
    ...h2Options,
    allowHTTP1: false,
    minVersion: 'TLSv1.2',
    ...(agentSide
      ? {
          cert: pem('agent-node-a.crt'),
          key: pem('agent-node-a.key'),
          ca: pem('ca.crt'),
          requestCert: true,
          rejectUnauthorized: true,
        }
      : { cert: pem('gateway.crt'), key: pem('gateway.key') }),
  }
}

/** The mTLS options of the gateway's client side. */
const gatewayClientTls = (): tls.ConnectionOptions => ({
  ca: pem('ca.crt'),
  cert: pem('gateway-client.crt'),
  key: pem('gateway-client.key'),
})

/**
 * How the gateway's pool refills: `refill` (a full handshake per new connection, started
 * when a stream takes one), `resume` (the same, presenting the last TLS session ticket),
 * `prefill` (filled once before listening, never refilled while it has sockets: no
 * handshake on any measured open — the pool's critical path alone).
 */
type PoolMode = 'refill' | 'resume' | 'prefill'

/**
 * The gateway's pool of ready mutual-TLS sockets to the agent: `take()` hands out a socket
 * whose handshake is done (dialing one when the pool is empty) and starts a refill.
 */
class TlsPool {
  #ready: TLSSocket[] = []
  #dialing = 0
  /** One context for every dial, as a long-lived pool keeps it (certificates parsed once). */
  #context = tls.createSecureContext({ ...gatewayClientTls(), minVersion: 'TLSv1.2' })
  /** The last TLS session ticket (`resume`). */
  #session: Buffer | undefined
  /** Handshakes that resumed a session, of all completed. */
  resumed = 0
  dialed = 0
  #filled: () => void = () => undefined
  /** Resolves once the pool first holds `size` ready sockets. */
  readonly filled = new Promise<void>((resolve) => (this.#filled = resolve))
  readonly size: number
  readonly mode: PoolMode
  constructor(size: number, mode: PoolMode) {
    this.size = size
    this.mode = mode
    this.#refill()
  }

  #dial(): Promise<TLSSocket> {
    return new Promise((resolve, reject) => {
      // allowHalfOpen is honoured by tls.connect (it is passed to the TLSSocket), not typed.
      const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
        host: '127.0.0.1',
        port: nextPort,
        secureContext: this.#context,
        allowHalfOpen: true,
        ...(this.#session !== undefined ? { session: this.#session } : {}),
      }
      const s = tls.connect(options)
      s.setNoDelay(true)
      if (this.mode === 'resume') s.on('session', (t: Buffer) => (this.#session = t))
      s.once('secureConnect', () => {
        this.dialed++
        if (s.isSessionReused()) this.resumed++
        resolve(s)
      })
      s.once('error', reject)
    })
  }

  #refill(): void {
    // At most 16 handshakes at a time (the prefill of a large pool).
    while (this.#ready.length + this.#dialing < this.size && this.#dialing < 16) {
      this.#dialing++
      this.#dial().then(
        (s) => {
          this.#dialing--
          s.removeAllListeners('error')
          const drop = (): void => {
            const i = this.#ready.indexOf(s)
            if (i >= 0) this.#ready.splice(i, 1)
            s.destroy()
          }
          s.once('error', drop)
          s.once('end', drop)
          this.#ready.push(s)
          if (this.#ready.length >= this.size) this.#filled()
          else this.#refill()
        },
        () => {
          this.#dialing--
          setTimeout(() => this.#refill(), 100)
        },
      )
    }
  }

  async take(): Promise<TLSSocket> {
    const s = this.#ready.shift()
    if (this.mode !== 'prefill' || this.#ready.length === 0) this.#refill()
    if (s !== undefined) {
      s.removeAllListeners('error')
      s.removeAllListeners('end')
      return s
    }
    return this.#dial()
  }
}

/** Sends the target line on a pooled socket; resolves once the agent's status byte came. */
function openPooled(s: TLSSocket, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      s.off('data', onData)
      s.off('error', reject)
      s.off('end', onEnd)
      s.pause()
      if (chunk.length > 1) s.unshift(chunk.subarray(1))
      if (chunk[0] === 0) resolve()
      else reject(new Error(`agent status ${chunk[0]}`))
    }
    const onEnd = (): void => reject(new Error('agent closed'))
    s.on('data', onData)
    s.once('error', reject)
    s.once('end', onEnd)
    s.write(`${target}\n`)
  })
}

function listening(): void {
  process.stdout.write('listening\n')
}
const listenPort = Number(listenArg)

switch (role) {
  case 'forwarder': {
    const session = sharedSession({ ca: pem('ca.crt') })
    session()
    net
      .createServer({ allowHalfOpen: true, noDelay: true }, (sock: Socket) => {
        openStream(
          session(),
          (stream) => {
            if (sock.destroyed) {
              stream.close(http2.constants.NGHTTP2_CANCEL)
              return
            }
            join2(sock, stream)
          },
          () => sock.destroy(),
        )
      })
      .listen(listenPort, '127.0.0.1', listening)
    break
  }
  case 'gateway':
  case 'gateway-pool': {
    const agentSession = role === 'gateway' ? sharedSession(gatewayClientTls()) : undefined
    agentSession?.()
    const pool = role === 'gateway-pool' ? new TlsPool(poolSize, poolMode) : undefined
    const server = http2.createSecureServer(serverOptions(false))
    server.on('session', (s) => s.setLocalWindowSize(CONNECTION_WINDOW))
    server.on('stream', (stream: ServerHttp2Stream) => {
      if (agentSession !== undefined) {
        openStream(
          agentSession(),
          (up) => {
            if (stream.destroyed) {
              up.close(http2.constants.NGHTTP2_CANCEL)
              return
            }
            stream.respond({ ':status': 200 })
            join2(stream, up)
          },
          (status) => refuse(stream, status),
        )
        return
      }
      void (pool as TlsPool).take().then(
        async (up) => {
          try {
            await openPooled(up, 'default/bench:5000')
          } catch {
            up.destroy()
            refuse(stream, 502)
            return
          }
          if (stream.destroyed) {
            up.destroy()
            return
          }
          stream.respond({ ':status': 200 })
          join2(stream, up)
        },
        () => refuse(stream, 502),
      )
    })
    if (pool !== undefined) {
      process.on('SIGUSR2', () =>
        process.stderr.write(`pool: ${pool.dialed} handshakes, ${pool.resumed} resumed\n`),
      )
    }
    void (pool?.filled ?? Promise.resolve()).then(() =>
      server.listen(listenPort, '127.0.0.1', listening),
    )
    break
  }
  case 'agent': {
    const server = http2.createSecureServer(serverOptions(true))
    server.on('session', (s) => s.setLocalWindowSize(CONNECTION_WINDOW))
    server.on('stream', (stream: ServerHttp2Stream) => {
      const pod = net.connect({ host: '127.0.0.1', port: nextPort, allowHalfOpen: true })
      pod.setNoDelay(true)
      pod.once('error', () => refuse(stream, 502))
      pod.once('connect', () => {
        pod.removeAllListeners('error')
        if (stream.destroyed) {
          pod.destroy()
          return
        }
        stream.respond({ ':status': 200 })
        join2(stream, pod)
      })
    })
    server.listen(listenPort, '127.0.0.1', listening)
    break
  }
  case 'agent-pool': {
    const options: tls.TlsOptions & { allowHalfOpen: boolean } = {
      ...serverOptions(true),
      allowHalfOpen: true,
    }
    tls
      .createServer(options, (s: TLSSocket) => {
        s.setNoDelay(true)
        let head = ''
        const onData = (chunk: Buffer): void => {
          const nl = chunk.indexOf(10)
          if (nl < 0) {
            head += chunk.toString('latin1')
            if (head.length > 1024) s.destroy()
            return
          }
          s.off('data', onData)
          s.pause()
          if (nl + 1 < chunk.length) s.unshift(chunk.subarray(nl + 1))
          head += chunk.toString('latin1', 0, nl)
          // The gateway names the target (as pfgate's gateway names the pod); this agent
          // serves one, its NEXT_PORT, and only checks that the line names something.
          if (head.length === 0) {
            s.end(Buffer.of(2))
            return
          }
          const pod = net.connect({ host: '127.0.0.1', port: nextPort, allowHalfOpen: true })
          pod.setNoDelay(true)
          pod.once('error', () => s.end(Buffer.of(1)))
          pod.once('connect', () => {
            pod.removeAllListeners('error')
            s.write(Buffer.of(0))
            join2(s, pod)
          })
        }
        s.on('data', onData)
        s.once('error', () => s.destroy())
      })
      .listen(listenPort, '127.0.0.1', listening)
    break
  }
}
process.on('SIGTERM', () => process.exit(0))
