/**
 * The network-namespace helper: a tiny long-lived process that the agent starts
 * inside one pod's network namespace (`nsenter --net=<path> -- node netns-helper.js`)
 * with a Node IPC channel. For each `{id, port, timeoutMs, podIps}` request it connects
 * to `127.0.0.1:<port>`, then `[::1]:<port>`, inside its namespace (what containerd
 * does for the kubelet), then to the pod's own addresses, and sends the connected
 * socket's file descriptor back to the agent with `process.send(msg, socket)`; the
 * agent relays it directly, so no byte ever passes through this process.
 *
 * A UDP request (`protocol: 'udp'`) finds the address a UDP socket of the namespace is
 * bound to on that port (from `/proc/net/udp` and `/proc/net/udp6`, which show this
 * namespace's sockets), binds a UDP socket of the same family to an ephemeral port of
 * that loopback or pod address, and passes it back the same way; the agent connects it
 * to the pod's address (`connect(2)` on the descriptor acts in the socket's namespace),
 * which makes the kernel drop datagrams from any other source. Nothing bound: the
 * request fails with ECONNREFUSED, as a TCP connect to a closed port does.
 *
 * It is deliberately dumb and strict: it only ever connects to addresses of its own
 * namespace (loopback, and a pod IP only when an interface of the namespace has it,
 * so a connect never leaves the pod), accepts nothing but integer fields and IP
 * literals, imports nothing but `node:net`/`node:dgram`/`node:fs`/`node:os`, and exits as soon as
 * the IPC channel goes away (the agent died or let it go), so a helper can never
 * outlive its agent. Messages are described in {@link HelperRequest} and
 * {@link HelperMessage}; the agent side is `helper-process.ts`.
 *
 * @module
 */
import { createSocket } from 'node:dgram'
import type { Socket as UdpSocket } from 'node:dgram'
import { BlockList, isIP, Socket } from 'node:net'
import { readFileSync, realpathSync, statSync } from 'node:fs'
import { endianness, networkInterfaces } from 'node:os'
import { fileURLToPath } from 'node:url'

/** Agent → helper: connect to `port`, giving up after `timeoutMs`. */
export interface HelperRequest {
  /** Request id chosen by the agent (echoed back). */
  id: number
  /** TCP port, 1..65535. */
  port: number
  /** Deadline for all attempts together, ms. */
  timeoutMs: number
  /** The pod's own IP addresses, tried after loopback (from the container runtime). */
  podIps: string[]
  /** `udp` for a UDP flow (a bound UDP socket comes back); absent for TCP. */
  protocol?: 'udp'
}

/** One failed connect attempt, as reported to the agent. */
export interface HelperAttemptError {
  /** The address tried: `127.0.0.1`, `::1`, or a pod IP. */
  address: string
  /**
   * errno name (`ECONNREFUSED`, `ENETUNREACH`...), `ETIMEDOUT` for our own deadline,
   * or `EADDRNOTAVAIL` for a pod IP that no interface of the namespace has.
   */
  code: string
}

/** Most pod IPs a request may carry (a dual-stack pod has two). */
export const MAX_POD_IPS = 8

/** Helper → agent messages. A `connected` message carries the socket handle. */
export type HelperMessage =
  | { type: 'ready'; pid: number; dev: number; ino: number }
  | { type: 'connected'; id: number; address: string }
  | { type: 'failed'; id: number; errors: HelperAttemptError[] }

/** Largest id the agent uses (ids wrap below it). */
export const MAX_REQUEST_ID = 2 ** 31 - 1
/** Largest accepted per-request timeout, ms. */
export const MAX_HELPER_TIMEOUT_MS = 600_000
/** Concurrent connects a helper will run; more are answered with EAGAIN at once. */
export const MAX_HELPER_INFLIGHT = 4096

/** An IP literal in canonical-enough form (what `net.isIP` accepts, bounded). */
const isAddress = (v: unknown): boolean => typeof v === 'string' && v.length <= 45 && isIP(v) !== 0

/** Strict check of an agent request: exactly the four fields (five with `protocol: 'udp'`), in range. */
export function isHelperRequest(msg: unknown): msg is HelperRequest {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return false
  const keys = Object.keys(msg)
  const { id, port, timeoutMs, podIps, protocol } = msg as Record<string, unknown>
  if (keys.length !== (protocol === undefined ? 4 : 5)) return false
  if (protocol !== undefined && protocol !== 'udp') return false
  return (
    Array.isArray(podIps) &&
    podIps.length <= MAX_POD_IPS &&
    podIps.every(isAddress) &&
    Number.isInteger(id) &&
    (id as number) >= 0 &&
    (id as number) <= MAX_REQUEST_ID &&
    Number.isInteger(port) &&
    (port as number) >= 1 &&
    (port as number) <= 65535 &&
    Number.isInteger(timeoutMs) &&
    (timeoutMs as number) >= 1 &&
    (timeoutMs as number) <= MAX_HELPER_TIMEOUT_MS
  )
}

const ERRNO_NAME = /^E[A-Z0-9]{1,31}$/

/** Strict check of a helper message (the agent validates everything it receives too). */
export function isHelperMessage(msg: unknown): msg is HelperMessage {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return false
  const m = msg as Record<string, unknown>
  const isId = (v: unknown): boolean =>
    Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_REQUEST_ID
  switch (m.type) {
    case 'ready':
      return (
        Number.isInteger(m.pid) &&
        (m.pid as number) > 0 &&
        Number.isSafeInteger(m.dev) &&
        (m.dev as number) >= 0 &&
        Number.isSafeInteger(m.ino) &&
        (m.ino as number) > 0
      )
    case 'connected':
      return isId(m.id) && isAddress(m.address)
    case 'failed':
      return (
        isId(m.id) &&
        Array.isArray(m.errors) &&
        m.errors.length >= 1 &&
        m.errors.length <= 2 + MAX_POD_IPS &&
        m.errors.every(
          (e: unknown) =>
            typeof e === 'object' &&
            e !== null &&
            isAddress((e as Record<string, unknown>).address) &&
            typeof (e as Record<string, unknown>).code === 'string' &&
            ERRNO_NAME.test((e as Record<string, unknown>).code as string),
        )
      )
    default:
      return false
  }
}

/** Result of one connect attempt inside the helper. */
type Attempt = { socket: Socket } | { code: string }

/**
 * Connects to one loopback address. The socket is paused before it connects so
 * that Node never starts reading from it here: a pod that speaks first (a banner)
 * must find its bytes still queued in the kernel when the descriptor reaches the agent.
 */
function attempt(host: string, port: number, deadline: number): Promise<Attempt> {
  const remaining = deadline - Date.now()
  if (remaining <= 0) return Promise.resolve({ code: 'ETIMEDOUT' })
  return new Promise((resolve) => {
    const socket = new Socket()
    socket.pause()
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ code: 'ETIMEDOUT' })
    }, remaining)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.removeAllListeners('error')
      resolve({ socket })
    })
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ code: typeof err.code === 'string' ? err.code : 'EIO' })
    })
    socket.connect({ host, port, family: isIP(host) })
  })
}

/**
 * Sends a message to the agent; with a socket, its descriptor goes along and our copy
 * is closed once the agent has acknowledged it (keepOpen false). A send that fails
 * means the channel is gone: the 'disconnect' handler ends the process.
 */
function reply(msg: HelperMessage, socket?: Socket): void {
  process.send?.(msg, socket, { keepOpen: false }, (err: Error | null) => {
    if (err) socket?.destroy()
  })
}

/** One UDP socket of this namespace that could receive datagrams: unconnected, by local address. */
interface BoundUdp {
  family: 'ipv4' | 'ipv6'
  address: string
}

/**
 * Decodes `/proc/net/udp{,6}`'s hex address: 32-bit words in host byte order. Returns
 * a literal `BlockList` understands (IPv6 in full eight-group form).
 */
function procAddress(hex: string): string {
  const bytes = Buffer.from(hex, 'hex')
  if (endianness() === 'LE') {
    for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse()
  }
  if (bytes.length === 4) return [...bytes].join('.')
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16))
  return groups.join(':')
}

/** Unconnected UDP sockets of this namespace bound to `port` (its own `/proc/net`). */
function boundUdp(port: number): BoundUdp[] {
  const out: BoundUdp[] = []
  for (const [file, family] of [
    ['/proc/net/udp', 'ipv4'],
    ['/proc/net/udp6', 'ipv6'],
  ] as const) {
    let text: string
    try {
      text = readFileSync(file, 'latin1')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      const local = /^([0-9A-F]+):([0-9A-F]{4})$/.exec(f[1] ?? '')
      const remote = /^[0-9A-F]+:([0-9A-F]{4})$/.exec(f[2] ?? '')
      if (local === null || remote === null || parseInt(local[2]!, 16) !== port) continue
      if (parseInt(remote[1]!, 16) !== 0) continue // connected: not a server
      out.push({ family, address: procAddress(local[1]!) })
    }
  }
  return out
}

/** Whether a datagram sent to `host:port` reaches one of `bound` (a wildcard or that address). */
function udpReaches(host: string, bound: readonly BoundUdp[]): boolean {
  const v6 = isIP(host) === 6
  const want = new BlockList()
  want.addAddress(host, v6 ? 'ipv6' : 'ipv4')
  if (!v6) want.addAddress(`::ffff:${host}`, 'ipv6')
  return bound.some((b) => {
    if (b.family === 'ipv4')
      return !v6 && (b.address === '0.0.0.0' || want.check(b.address, 'ipv4'))
    // `::` takes IPv4 too unless the socket is IPV6_V6ONLY, which /proc does not show.
    return b.address === '0:0:0:0:0:0:0:0' || want.check(b.address, 'ipv6')
  })
}

/** Binds a UDP socket of `host`'s family to an ephemeral port of `host` (in this namespace). */
function bindUdp(host: string): Promise<{ socket: UdpSocket } | { code: string }> {
  return new Promise((resolve) => {
    const socket = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4')
    socket.once('error', (err: NodeJS.ErrnoException) => {
      socket.close()
      resolve({ code: typeof err.code === 'string' ? err.code : 'EIO' })
    })
    socket.bind({ port: 0, address: host, exclusive: true }, () => {
      socket.removeAllListeners('error')
      resolve({ socket })
    })
  })
}

/**
 * Runs one UDP request: the first of 127.0.0.1, [::1] and the pod's own addresses that a
 * UDP socket of the namespace receives on; a socket bound there goes back to the agent.
 */
async function serveUdp(req: HelperRequest): Promise<void> {
  const bound = boundUdp(req.port)
  const local = req.podIps.length > 0 ? localAddresses() : new Set<string>()
  const errors: HelperAttemptError[] = []
  for (const host of ['127.0.0.1', '::1', ...req.podIps]) {
    if (host !== '127.0.0.1' && host !== '::1' && !local.has(host)) {
      errors.push({ address: host, code: 'EADDRNOTAVAIL' })
      continue
    }
    if (!udpReaches(host, bound)) {
      errors.push({ address: host, code: 'ECONNREFUSED' })
      continue
    }
    const r = await bindUdp(host)
    if ('socket' in r) {
      const socket = r.socket
      // Our copy of the descriptor closes once it is on its way (dgram sockets have no
      // keepOpen handling of their own).
      process.send?.({ type: 'connected', id: req.id, address: host }, socket, {}, () =>
        socket.close(),
      )
      return
    }
    errors.push({ address: host, code: r.code })
  }
  reply({ type: 'failed', id: req.id, errors })
}

/** The addresses of this namespace's interfaces (the helper lives in the pod's namespace). */
function localAddresses(): Set<string> {
  const out = new Set<string>()
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) out.add(a.address)
  }
  return out
}

/**
 * Runs one request: 127.0.0.1, then [::1], like containerd's PortForward; then each
 * pod IP that an interface of this namespace has (a server bound only to the pod IP).
 * A pod IP the namespace does not have is not dialled: it would be routed elsewhere.
 */
async function serve(req: HelperRequest): Promise<void> {
  const deadline = Date.now() + req.timeoutMs
  const errors: HelperAttemptError[] = []
  const local = req.podIps.length > 0 ? localAddresses() : new Set<string>()
  for (const host of ['127.0.0.1', '::1', ...req.podIps]) {
    if (host !== '127.0.0.1' && host !== '::1' && !local.has(host)) {
      errors.push({ address: host, code: 'EADDRNOTAVAIL' })
      continue
    }
    const r = await attempt(host, req.port, deadline)
    if ('socket' in r) {
      reply({ type: 'connected', id: req.id, address: host }, r.socket)
      return
    }
    errors.push({ address: host, code: r.code })
  }
  reply({ type: 'failed', id: req.id, errors })
}

/** Entry point: wires the IPC channel. Exits at once without one. */
function main(): void {
  if (typeof process.send !== 'function') {
    process.stderr.write('netns-helper: must be started by the pfgate agent with an IPC channel\n')
    process.exit(2)
  }
  process.title = 'pfgate-netns-helper'
  // The agent died or stopped us: never outlive it.
  process.on('disconnect', () => process.exit(0))
  let inflight = 0
  process.on('message', (msg: unknown) => {
    if (!isHelperRequest(msg)) {
      process.stderr.write('netns-helper: ignored a malformed request\n')
      return
    }
    if (inflight >= MAX_HELPER_INFLIGHT) {
      reply({
        type: 'failed',
        id: msg.id,
        errors: [
          { address: '127.0.0.1', code: 'EAGAIN' },
          { address: '::1', code: 'EAGAIN' },
        ],
      })
      return
    }
    inflight++
    ;(msg.protocol === 'udp' ? serveUdp(msg) : serve(msg)).then(
      () => inflight--,
      (err: unknown) => {
        inflight--
        process.stderr.write(`netns-helper: ${String(err)}\n`)
      },
    )
  })
  // Proves to the agent which namespace we are really in (it compares with its stat of the path).
  const ns = statSync('/proc/self/ns/net')
  reply({ type: 'ready', pid: process.pid, dev: ns.dev, ino: ns.ino })
}

/** True when this file is the process entry (not imported by the agent or a test). */
function isEntryPoint(): boolean {
  const entry = process.argv[1]
  if (entry === undefined) return false
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) main()
