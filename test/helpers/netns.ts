/**
 * Test utilities for real network namespaces: create and delete `ip netns`
 * namespaces, run small TCP servers inside them, and inspect /proc for leaked
 * processes and sockets. Needs root, `ip` and `nsenter`; {@link assertNetnsPrerequisites}
 * fails loudly when they are missing (these tests never skip).
 *
 * @module
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import type { Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { isAppError } from '../../src/shared/errors.js'

/** Throws a clear error unless we are root with `ip` and `nsenter` on PATH. */
export function assertNetnsPrerequisites(): void {
  const problems: string[] = []
  if (process.getuid?.() !== 0) problems.push(`not root (uid ${process.getuid?.()})`)
  for (const tool of ['ip', 'nsenter']) {
    const r = spawnSync(tool, ['-V'], { stdio: 'ignore' })
    if (r.error !== undefined) problems.push(`\`${tool}\` is missing (${r.error.message})`)
  }
  if (problems.length > 0) {
    throw new Error(
      `network-namespace tests need root, iproute2 (ip) and util-linux (nsenter): ${problems.join('; ')}`,
    )
  }
}

/** Runs a command, throwing with its stderr when it fails. */
function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${r.error?.message ?? r.stderr.trim()}`)
  }
}

/** A namespace created for a test. */
export interface TestNetns {
  /** Name under /run/netns. */
  name: string
  /** `/run/netns/<name>`. */
  path: string
  /** `ip netns del` (idempotent). */
  destroy(): void
}

/** `ip netns add pfgate-t-<random>`, with `lo` up unless `loopbackUp` is false. */
export function createNetns(options: { loopbackUp?: boolean; prefix?: string } = {}): TestNetns {
  const name = `${options.prefix ?? 'pfgate-t'}-${randomBytes(4).toString('hex')}`
  run('ip', ['netns', 'add', name])
  if (options.loopbackUp !== false) run('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
  let gone = false
  return {
    name,
    path: `/run/netns/${name}`,
    destroy() {
      if (gone) return
      gone = true
      deleteNetns(name)
    },
  }
}

/** `ip netns del <name>`, ignoring a namespace that is already gone. */
export function deleteNetns(name: string): void {
  spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' })
}

/** What a test server does with each connection. */
export type ServerKind =
  /** Writes `banner` (if any), then echoes; ends after the client's FIN (allowHalfOpen). */
  | 'echo'
  /** Writes `banner` and FINs at once, then hashes what it receives: `RECEIVED <n> <sha256>`. */
  | 'halfclose'
  /** Listens with a full backlog so connects hang; the line `accept` makes it accept. */
  | 'blackhole'
  /**
   * UDP echo: sends every datagram back to its source. A datagram `wrong-port:X` is first
   * answered `WRONG` from a second socket (another port), then `X` from the right one.
   */
  | 'udp-echo'

// Server programs, run with `node -e` (echo, halfclose) or `python3 -c` (blackhole).
// They print `LISTEN <port>` once listening and one line per event.
const NODE_SERVER = String.raw`
const net = require('net'), crypto = require('crypto'), dgram = require('dgram')
const [kind, host, banner] = process.argv.slice(1)
let n = 0
if (kind === 'udp-echo') {
  const type = net.isIPv6(host) ? 'udp6' : 'udp4'
  const u = dgram.createSocket(type), other = dgram.createSocket(type)
  u.on('message', (m, r) => {
    const s = m.toString('latin1')
    if (s.startsWith('wrong-port:')) {
      other.send('WRONG', r.port, r.address, () => u.send(m.subarray(11), r.port, r.address))
      return
    }
    u.send(m, r.port, r.address)
  })
  other.bind(0, host, () => u.bind(0, host, () => console.log('LISTEN ' + u.address().port)))
}
const server = kind === 'udp-echo' ? undefined : net.createServer({ allowHalfOpen: true }, (s) => {
  const id = ++n
  console.log('OPEN ' + id)
  s.on('error', (e) => console.log('ERROR ' + id + ' ' + e.code))
  s.on('close', () => console.log('CLOSE ' + id))
  if (kind === 'echo') {
    if (banner) s.write(banner)
    s.pipe(s)
  } else {
    s.end(banner || 'bye')
    const h = crypto.createHash('sha256')
    let bytes = 0
    s.on('data', (d) => { bytes += d.length; h.update(d) })
    s.on('end', () => console.log('RECEIVED ' + bytes + ' ' + h.digest('hex')))
  }
})
if (server) server.listen({ host, port: 0, ipv6Only: host === '::1' }, () => console.log('LISTEN ' + server.address().port))
process.on('SIGTERM', () => process.exit(0))
`

// listen(0) plus connects from inside fill the accept queue: further SYNs are dropped
// and connects hang until the line "accept" arrives; then every accepted connection
// that reaches EOF prints "EOF".
const PYTHON_BLACKHOLE = String.raw`
import socket, sys, threading
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
port = s.getsockname()[1]
fill = []
for i in range(3):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(('127.0.0.1', port))
    except BlockingIOError: pass
    fill.append(c)
print('LISTEN', port, flush=True)
def watch(conn):
    while True:
        try: d = conn.recv(65536)
        except OSError: d = b''
        if not d:
            print('EOF', flush=True); return
def acceptor():
    while True:
        conn, _ = s.accept()
        print('OPEN', flush=True)
        threading.Thread(target=watch, args=(conn,), daemon=True).start()
for line in sys.stdin:
    if line.strip() == 'accept':
        threading.Thread(target=acceptor, daemon=True).start()
`

/** A server running inside a namespace. */
export interface NetnsServer {
  port: number
  /** The server process (node or python3, exec'ed by `ip netns exec`). */
  pid: number
  /** Every line it printed so far. */
  lines: string[]
  /** Resolves with the first line (already printed or future) matching `re`. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>
  /** Writes a line to its stdin. */
  send(line: string): void
  /** SIGTERM (then SIGKILL) and wait for the exit (idempotent). */
  stop(): Promise<void>
}

/**
 * Starts a server of `kind` inside namespace `netns` on `host` (default 127.0.0.1).
 * `netns` is an `ip netns` name, or an absolute namespace path (entered with nsenter:
 * e.g. a containerd sandbox's).
 */
export async function startServerInNetns(
  netns: string,
  kind: ServerKind,
  options: { host?: string; banner?: string } = {},
): Promise<NetnsServer> {
  const host = options.host ?? '127.0.0.1'
  const args =
    kind === 'blackhole'
      ? ['netns', 'exec', netns, '/usr/bin/python3', '-u', '-c', PYTHON_BLACKHOLE]
      : [
          'netns',
          'exec',
          netns,
          process.execPath,
          '-e',
          NODE_SERVER,
          kind,
          host,
          options.banner ?? '',
        ]
  const child = netns.startsWith('/')
    ? spawn('nsenter', [`--net=${netns}`, '--', ...args.slice(3)], {
        stdio: ['pipe', 'pipe', 'inherit'],
      })
    : spawn('ip', args, { stdio: ['pipe', 'pipe', 'inherit'] })
  return wrapServer(child)
}

/** Starts a server of `kind` in the current (host) namespace, for comparisons. */
export async function startServerOnHost(
  kind: Exclude<ServerKind, 'blackhole'>,
  options: { banner?: string } = {},
): Promise<NetnsServer> {
  const child = spawn(
    process.execPath,
    ['-e', NODE_SERVER, kind, '127.0.0.1', options.banner ?? ''],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  )
  return wrapServer(child)
}

async function wrapServer(child: ChildProcess): Promise<NetnsServer> {
  const lines: string[] = []
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = []
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line)
    for (const w of [...waiters]) {
      if (w.re.test(line)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(line)
      }
    }
  })
  const waitForLine = (re: RegExp, timeoutMs = 5000): Promise<string> => {
    const seen = lines.find((l) => re.test(l))
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const w = {
        re,
        resolve: (l: string) => {
          clearTimeout(timer)
          resolve(l)
        },
      }
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1)
        reject(new Error(`server never printed ${re} (printed: ${lines.slice(-5).join(' | ')})`))
      }, timeoutMs)
      waiters.push(w)
    })
  }
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const killer = setTimeout(() => child.kill('SIGKILL'), 2000)
      await exited
      clearTimeout(killer)
    }
  }
  let listen: string
  try {
    listen = await waitForLine(/^LISTEN \d+$/, 10_000)
  } catch (err) {
    await stop()
    throw err
  }
  return {
    port: Number(listen.split(' ')[1]),
    pid: child.pid!,
    lines,
    waitForLine,
    send: (line) => child.stdin!.write(`${line}\n`),
    stop,
  }
}

/** Pids whose parent is `ppid` (from /proc), zombies included. */
export function childPidsOf(ppid: number): number[] {
  const out: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) === ppid) out.push(Number(entry))
    } catch {
      // The process ended while we looked.
    }
  }
  return out
}

/** True while `pid` exists and is not a zombie. */
export function isPidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** Open file descriptors of this process: total and how many are sockets. */
export function fdCounts(): { total: number; sockets: number } {
  let sockets = 0
  const fds = readdirSync('/proc/self/fd')
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) sockets++
    } catch {
      // Closed while we looked (the readdir's own fd, for one).
    }
  }
  return { total: fds.length, sockets }
}

/** Polls `cond` every 20 ms until it is true, or throws after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Asserts that `p` rejects with an AppError of `code`; returns its message. */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<string> {
  try {
    await p
  } catch (err) {
    assert.ok(isAppError(err), `expected an AppError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    return err.message
  }
  assert.fail(`expected a rejection with ${code}`)
}

/** Writes `data`, half-closes, and collects everything until the peer's FIN. */
export function exchange(socket: Socket, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.once('end', () => resolve(Buffer.concat(chunks)))
    socket.once('error', reject)
    socket.end(data)
  })
}
