/**
 * A test-only fake kube-apiserver/kubelet that real clients (kubectl, the Python
 * client) can port-forward through: HTTPS with a self-signed certificate, the discovery
 * and pod GETs kubectl needs
 * (docs/kubernetes-protocols.md#the-smallest-answers-that-work), and the three upgrade
 * protocols, built on src/protocol:
 * - SPDY/3.1 upgrade (`POST`, protocol A) → SpdySession + servePortForward;
 * - the WebSocket SPDY tunnel (`SPDY/3.1+portforward.k8s.io`, protocol B), with the
 *   `ws` subprotocol workaround
 *   (docs/kubernetes-protocols.md#the-subprotocol-and-the-ws-package), perMessageDeflate off;
 * - the v4 channel protocols (protocol C).
 * Each forwarded connection is relayed to a local TCP port (the "pod").
 *
 * This plays the gateway's part only as far as the conformance tests need; it is
 * not the gateway.
 *
 * @module
 */
import https from 'node:https'
import net from 'node:net'
import { once } from 'node:events'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
import type { WebSocket } from 'ws'
import { SpdySession } from '../../src/protocol/spdy/session.js'
import { PORT_FORWARD_PROTOCOL, servePortForward } from '../../src/protocol/spdy/portforward.js'
import type {
  PortForwardStreamIssue,
  SpdyForwardRequest,
} from '../../src/protocol/spdy/portforward.js'
import {
  SPDY_TUNNEL_PROTOCOL,
  isSpdyUpgradeRequest,
  negotiateStreamProtocol,
  offersSpdyTunnel,
  spdyUpgradeResponse,
} from '../../src/protocol/spdy/upgrade.js'
import { createWebSocketByteStream } from '../../src/protocol/ws-stream.js'
import {
  channelRole,
  dataChannel,
  decodeChannelMessage,
  errorChannel,
  parsePortsQuery,
  selectChannelProtocol,
} from '../../src/protocol/ws-channel.js'
import type { ChannelEncoding } from '../../src/protocol/ws-channel.js'
import { ChannelWriter } from '../../src/protocol/ws-channel-writer.js'

const run = promisify(execFile)

/** Creates a self-signed P-256 certificate for 127.0.0.1 with the openssl CLI. */
export async function makeSelfSignedCert(dir: string): Promise<{ key: string; cert: string }> {
  await mkdir(dir, { recursive: true })
  const keyPath = join(dir, 'key.pem')
  const certPath = join(dir, 'cert.pem')
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '2',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ])
  } catch (err) {
    throw new Error(`the openssl CLI is required to make test certificates: ${String(err)}`, {
      cause: err,
    })
  }
  return { key: await readFile(keyPath, 'utf8'), cert: await readFile(certPath, 'utf8') }
}

/** Options for {@link startKubeProtocolServer}. */
export interface KubeProtocolServerOptions {
  /** Directory for the certificate. */
  dir: string
  /** Pod port → local TCP port on 127.0.0.1. Unknown pod ports are refused. */
  targets: Record<number, number>
  /** Serve the WebSocket SPDY tunnel (default true); false answers 400 so kubectl falls back. */
  tunnel?: boolean
  /** The bearer token every request must carry (default: no check). */
  token?: string
  /** The server minor version reported by /version (default "33"). */
  minor?: string
  /** Pairing timeout for SPDY streams (default 30 s). */
  streamCreationTimeoutMs?: number
}

/** One upgrade the server accepted. */
export interface UpgradeRecord {
  protocol: 'spdy' | 'ws-spdy' | 'ws-v4' | 'ws-v4-base64' | 'refused'
  method: string
  path: string
  userAgent: string | undefined
  authorization: string | undefined
}

/** One forwarded connection and how it ended. */
export interface ForwardRecord {
  protocol: 'spdy' | 'ws-v4'
  port: number
  outcome: 'finished' | 'failed' | 'client-gone'
  message?: string
}

/** A running fake API server. */
export interface KubeProtocolServer {
  url: string
  port: number
  cert: string
  /** Every request line, in order (`GET /api`…). */
  requests: string[]
  upgrades: UpgradeRecord[]
  forwards: ForwardRecord[]
  issues: PortForwardStreamIssue[]
  /** The `'close'` error of every SPDY session that ended. */
  sessionEnds: (Error | undefined)[]
  /** Live SPDY sessions. */
  sessions: Set<SpdySession>
  close(): Promise<void>
}

/** A port on 127.0.0.1 where nothing listens (connections are refused). */
export async function closedPort(): Promise<number> {
  const s = net.createServer()
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  const { port } = s.address() as net.AddressInfo
  s.close()
  await once(s, 'close')
  return port
}

/**
 * Relays one SPDY forward request to 127.0.0.1:`targetPort`, the way the gateway
 * is meant to: half-close both ways, `finish()` when the pod ends, `fail()` with a
 * kubelet-style line when the connection is refused.
 */
export function relaySpdyRequestToTcp(
  req: SpdyForwardRequest,
  targetPort: number,
  record: (r: ForwardRecord) => void = () => {},
): void {
  const pod = net.connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true })
  let connected = false
  let done = false
  const end = (outcome: ForwardRecord['outcome'], message?: string): void => {
    if (done) return
    done = true
    record({ protocol: 'spdy', port: req.port, outcome, message })
  }
  pod.on('connect', () => {
    connected = true
    req.data.pipe(pod) // the client's FIN half-closes toward the pod
    pod.pipe(req.data, { end: false })
  })
  pod.on('end', () => {
    end('finished')
    req.finish()
  })
  pod.on('error', (err) => {
    if (!connected) {
      const message = `error forwarding port ${req.port} to pod demo, uid : ${err.message}`
      end('failed', message)
      req.fail(message)
    } else {
      end('failed', err.message)
      req.reset()
    }
  })
  pod.on('close', () => {
    if (!req.settled) req.finish()
    // The pod is gone: whatever the client still sends has nowhere to go. Drain it
    // so this stream never holds up the session.
    req.data.unpipe(pod)
    req.data.resume()
  })
  req.data.on('close', () => {
    end('client-gone')
    pod.destroy()
  })
}

/** Serves the v4 channel protocol on `ws` for `ports`, relaying to TCP targets. */
function serveV4(
  ws: WebSocket,
  ports: number[],
  encoding: ChannelEncoding,
  targets: Record<number, number>,
  refused: number,
  record: (r: ForwardRecord) => void,
): void {
  // One frame per socket write, as the kubelet (Go) does: see ChannelWriter.
  const writer = new ChannelWriter(ws, encoding)
  const send = (channel: number, payload: Buffer, whole = false): void =>
    writer.send(channel, payload, undefined, whole)
  writer.sendPortPrefixes(ports)
  const finished = ports.map(() => false)
  const finish = (i: number): void => {
    finished[i] = true
    if (finished.every(Boolean)) {
      writer.whenIdle(() => {
        if (ws.readyState === ws.OPEN) ws.close(1000)
      })
    }
  }
  const conns = ports.map((port, i) => {
    const sock = net.connect({ host: '127.0.0.1', port: targets[port] ?? refused })
    let connected = false
    sock.on('connect', () => (connected = true))
    sock.on('data', (d: Buffer) => send(dataChannel(i), d))
    sock.on('end', () => {
      record({ protocol: 'ws-v4', port, outcome: 'finished' })
      finish(i)
    })
    sock.on('error', (err) => {
      const message = `error forwarding port ${port} to pod demo, uid : ${err.message}`
      if (!connected) send(errorChannel(i), Buffer.from(message), true)
      record({ protocol: 'ws-v4', port, outcome: 'failed', message })
      finish(i)
    })
    return sock
  })
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    let m
    try {
      m = decodeChannelMessage(data, isBinary, encoding)
    } catch {
      ws.close(1002)
      return
    }
    if (m === undefined) return
    const role = channelRole(m.channel, ports.length)
    if (role?.kind === 'data' && m.payload.length > 0) conns[role.portIndex]!.write(m.payload)
  })
  ws.on('close', () => {
    for (const c of conns) c.destroy()
  })
}

function json(res: ServerResponse, status: number, body: unknown, type?: string): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': type ?? 'application/json',
    'content-length': Buffer.byteLength(text),
  })
  res.end(text)
}

function status(code: number, message: string, reason: string): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  }
}

function rawReply(socket: Duplex, code: number, text: string, body: unknown, extra = ''): void {
  const payload = JSON.stringify(body)
  socket.end(
    `HTTP/1.1 ${code} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n${extra}Connection: close\r\n\r\n${payload}`,
  )
}

const PF_PATH = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/

/** Starts the fake server on 127.0.0.1 (random port). */
export async function startKubeProtocolServer(
  options: KubeProtocolServerOptions,
): Promise<KubeProtocolServer> {
  const { key, cert } = await makeSelfSignedCert(options.dir)
  const refused = await closedPort()
  const requests: string[] = []
  const upgrades: UpgradeRecord[] = []
  const forwards: ForwardRecord[] = []
  const issues: PortForwardStreamIssue[] = []
  const sessionEnds: (Error | undefined)[] = []
  const sessions = new Set<SpdySession>()
  const sockets = new Set<Duplex>()
  const record = (r: ForwardRecord): void => {
    forwards.push(r)
  }

  const authorized = (req: IncomingMessage): boolean =>
    options.token === undefined || req.headers.authorization === `Bearer ${options.token}`

  const pod = {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: { name: 'demo', namespace: 'default', uid: 'b7b5c5d4-0000-4000-8000-000000000001' },
    spec: {
      nodeName: 'node-a',
      containers: [
        {
          name: 'app',
          image: 'demo',
          ports: [
            { name: 'http', containerPort: 5000, protocol: 'TCP' },
            { name: 'closed', containerPort: 5001, protocol: 'TCP' },
          ],
        },
      ],
    },
    status: { phase: 'Running' },
  }

  const server = https.createServer({ key, cert }, (req, res) => {
    requests.push(`${req.method} ${req.url}`)
    if (!authorized(req)) {
      json(res, 401, status(401, 'Unauthorized', 'Unauthorized'))
      return
    }
    const path = (req.url ?? '').split('?')[0]
    if (req.method !== 'GET') {
      if (PF_PATH.test(path ?? '')) {
        json(res, 400, status(400, 'Upgrade request required', 'BadRequest'))
      } else {
        json(res, 405, status(405, 'method not allowed', 'MethodNotAllowed'))
      }
      return
    }
    switch (path) {
      case '/version':
        json(res, 200, {
          major: '1',
          minor: options.minor ?? '33',
          gitVersion: `v1.${options.minor ?? '33'}.1`,
          platform: 'linux/amd64',
        })
        return
      case '/api':
        json(res, 200, {
          kind: 'APIVersions',
          versions: ['v1'],
          serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1` }],
        })
        return
      case '/apis':
        json(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] })
        return
      case '/api/v1':
        json(res, 200, {
          kind: 'APIResourceList',
          groupVersion: 'v1',
          resources: [
            {
              name: 'pods',
              singularName: 'pod',
              namespaced: true,
              kind: 'Pod',
              verbs: ['get', 'list'],
              shortNames: ['po'],
            },
            {
              name: 'pods/portforward',
              singularName: '',
              namespaced: true,
              kind: 'PodPortForwardOptions',
              verbs: ['create', 'get'],
            },
          ],
        })
        return
      case '/api/v1/namespaces/default/pods/demo':
        json(res, 200, pod)
        return
      default:
        if (PF_PATH.test(path ?? '')) {
          json(res, 400, status(400, 'Upgrade request required', 'BadRequest'))
          return
        }
        json(res, 404, status(404, `the server could not find ${path}`, 'NotFound'))
    }
  })

  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (_offered, req) => v4Choice.get(req) ?? false,
  })
  const v4Choice = new WeakMap<IncomingMessage, string>()
  const tunnelReqs = new WeakSet<IncomingMessage>()
  wss.on('headers', (headers, req) => {
    // ws rejects "SPDY/3.1+…" as a token, so we removed the header and echo it here
    // (docs/kubernetes-protocols.md#the-subprotocol-and-the-ws-package).
    if (tunnelReqs.has(req)) headers.push(`Sec-WebSocket-Protocol: ${SPDY_TUNNEL_PROTOCOL}`)
  })

  const startSpdy = (transport: Duplex, head: Buffer | undefined): void => {
    const session = new SpdySession(transport, { head })
    sessions.add(session)
    session.on('close', (err) => {
      sessions.delete(session)
      sessionEnds.push(err)
    })
    servePortForward(session, {
      streamCreationTimeoutMs: options.streamCreationTimeoutMs,
      onStreamIssue: (i) => issues.push(i),
      onRequest: (req) => relaySpdyRequestToTcp(req, options.targets[req.port] ?? refused, record),
    })
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    requests.push(`${req.method} ${req.url} (upgrade: ${req.headers.upgrade ?? ''})`)
    const url = new URL(req.url ?? '/', 'https://127.0.0.1')
    const base = {
      method: req.method ?? '',
      path: req.url ?? '',
      userAgent: req.headers['user-agent'],
      authorization: req.headers.authorization,
    }
    if (!authorized(req)) {
      rawReply(socket, 401, 'Unauthorized', status(401, 'Unauthorized', 'Unauthorized'))
      return
    }
    if (!PF_PATH.test(url.pathname)) {
      rawReply(socket, 404, 'Not Found', status(404, 'not found', 'NotFound'))
      return
    }
    const upgrade = (req.headers.upgrade ?? '').toLowerCase()
    if (upgrade === 'websocket') {
      if (offersSpdyTunnel(req.headers['sec-websocket-protocol'])) {
        if (options.tunnel === false) {
          upgrades.push({ ...base, protocol: 'refused' })
          rawReply(
            socket,
            400,
            'Bad Request',
            status(400, 'tunnel disabled for this test', 'BadRequest'),
          )
          return
        }
        delete req.headers['sec-websocket-protocol']
        tunnelReqs.add(req)
        wss.handleUpgrade(req, socket, head, (ws) => {
          upgrades.push({ ...base, protocol: 'ws-spdy' })
          startSpdy(createWebSocketByteStream(ws), undefined)
        })
        return
      }
      const choice = selectChannelProtocol(req.headers['sec-websocket-protocol'])
      if (choice === undefined) {
        rawReply(socket, 403, 'Forbidden', status(403, 'unsupported subprotocol', 'Forbidden'))
        return
      }
      let ports: number[]
      try {
        ports = parsePortsQuery(url.searchParams)
      } catch (err) {
        rawReply(socket, 400, 'Bad Request', status(400, (err as Error).message, 'BadRequest'))
        return
      }
      if (choice.protocol !== '') v4Choice.set(req, choice.protocol)
      wss.handleUpgrade(req, socket, head, (ws) => {
        upgrades.push({
          ...base,
          protocol: choice.encoding === 'binary' ? 'ws-v4' : 'ws-v4-base64',
        })
        serveV4(ws, ports, choice.encoding, options.targets, refused, record)
      })
      return
    }
    if (isSpdyUpgradeRequest(req.headers)) {
      const choice = negotiateStreamProtocol(req.headers['x-stream-protocol-version'])
      if (!choice.ok) {
        rawReply(
          socket,
          choice.status,
          choice.status === 403 ? 'Forbidden' : 'Bad Request',
          status(choice.status, choice.message, choice.status === 403 ? 'Forbidden' : 'BadRequest'),
          `X-Accepted-Stream-Protocol-Versions: ${PORT_FORWARD_PROTOCOL}\r\n`,
        )
        return
      }
      upgrades.push({ ...base, protocol: 'spdy' })
      socket.write(spdyUpgradeResponse(choice.protocol))
      startSpdy(socket, head)
      return
    }
    rawReply(socket, 400, 'Bad Request', status(400, 'unsupported upgrade', 'BadRequest'))
  })

  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    cert,
    requests,
    upgrades,
    forwards,
    issues,
    sessionEnds,
    sessions,
    close: async () => {
      for (const s of sessions) s.destroy()
      for (const s of sockets) s.destroy()
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    },
  }
}

/** Writes a kubeconfig for `server` (token auth, the test CA) and returns its path. */
export async function writeKubeconfig(
  dir: string,
  server: { url: string; cert: string },
  token = 'test-token',
): Promise<string> {
  const path = join(dir, 'kubeconfig')
  const ca = Buffer.from(server.cert).toString('base64')
  await writeFile(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: test',
      '  cluster:',
      `    server: ${server.url}`,
      `    certificate-authority-data: ${ca}`,
      'users:',
      '- name: test',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: test',
      '  context:',
      '    cluster: test',
      '    user: test',
      '    namespace: default',
      'current-context: test',
      '',
    ].join('\n'),
    { mode: 0o600 },
  )
  return path
}
