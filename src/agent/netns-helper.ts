/**
 * The network-namespace helper: a tiny long-lived process that the agent starts
 * inside one pod's network namespace (`nsenter --net=<path> -- node netns-helper.js`)
 * with a Node IPC channel. For each `{id, port, timeoutMs}` request it connects to
 * `127.0.0.1:<port>`, then `[::1]:<port>`, inside its namespace (what containerd
 * does for the kubelet) and sends the connected socket's file descriptor back to
 * the agent with `process.send(msg, socket)`; the agent relays it directly, so no
 * byte ever passes through this process.
 *
 * It is deliberately dumb and strict: it only ever connects to loopback, accepts
 * nothing but integer fields, imports nothing but `node:net`/`node:fs`, and exits
 * as soon as the IPC channel goes away (the agent died or let it go), so a helper
 * can never outlive its agent. Messages are described in {@link HelperRequest}
 * and {@link HelperMessage}; the agent side is `netns-dialer.ts`.
 *
 * @module
 */
import { Socket } from 'node:net'
import { realpathSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** Agent → helper: connect to `port` on loopback, giving up after `timeoutMs`. */
export interface HelperRequest {
  /** Request id chosen by the agent (echoed back). */
  id: number
  /** TCP port, 1..65535. */
  port: number
  /** Deadline for both attempts together, ms. */
  timeoutMs: number
}

/** One failed connect attempt, as reported to the agent. */
export interface HelperAttemptError {
  /** 4 for 127.0.0.1, 6 for [::1]. */
  family: 4 | 6
  /** errno name (`ECONNREFUSED`, `ENETUNREACH`...) or `ETIMEDOUT` for our own deadline. */
  code: string
}

/** Helper → agent messages. A `connected` message carries the socket handle. */
export type HelperMessage =
  | { type: 'ready'; pid: number; dev: number; ino: number }
  | { type: 'connected'; id: number; family: 4 | 6 }
  | { type: 'failed'; id: number; errors: HelperAttemptError[] }

/** Largest id the agent uses (ids wrap below it). */
export const MAX_REQUEST_ID = 2 ** 31 - 1
/** Largest accepted per-request timeout, ms. */
export const MAX_HELPER_TIMEOUT_MS = 600_000
/** Concurrent connects a helper will run; more are answered with EAGAIN at once. */
export const MAX_HELPER_INFLIGHT = 4096

/** Strict check of an agent request: exactly the three integer fields, in range. */
export function isHelperRequest(msg: unknown): msg is HelperRequest {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return false
  const keys = Object.keys(msg)
  if (keys.length !== 3) return false
  const { id, port, timeoutMs } = msg as Record<string, unknown>
  return (
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
  const isFamily = (v: unknown): boolean => v === 4 || v === 6
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
      return isId(m.id) && isFamily(m.family)
    case 'failed':
      return (
        isId(m.id) &&
        Array.isArray(m.errors) &&
        m.errors.length >= 1 &&
        m.errors.length <= 2 &&
        m.errors.every(
          (e: unknown) =>
            typeof e === 'object' &&
            e !== null &&
            isFamily((e as Record<string, unknown>).family) &&
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
function attempt(host: '127.0.0.1' | '::1', port: number, deadline: number): Promise<Attempt> {
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
    socket.connect({ host, port, family: host === '::1' ? 6 : 4 })
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

/** Runs one request: IPv4 first, then IPv6, like containerd's PortForward. */
async function serve(req: HelperRequest): Promise<void> {
  const deadline = Date.now() + req.timeoutMs
  const errors: HelperAttemptError[] = []
  for (const [family, host] of [
    [4, '127.0.0.1'],
    [6, '::1'],
  ] as const) {
    const r = await attempt(host, req.port, deadline)
    if ('socket' in r) {
      reply({ type: 'connected', id: req.id, family }, r.socket)
      return
    }
    errors.push({ family, code: r.code })
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
          { family: 4, code: 'EAGAIN' },
          { family: 6, code: 'EAGAIN' },
        ],
      })
      return
    }
    inflight++
    serve(msg).then(
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
