/**
 * Small helpers shared by the benchmark sections: statistics, per-process CPU and
 * memory from /proc, child processes that must not outlive the run, and waiting for
 * a TCP port.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import type { ChildProcess, SpawnOptions } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

/** The median of `xs` (NaN when empty). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** The `q` quantile (0..1) of `xs`, nearest rank. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))
  return s[rank] as number
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on every Linux we run on). */
const USER_HZ = 100

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces: split after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // Fields 14 (utime) and 15 (stime) are at 11 and 12 after the name and state.
    return (Number(fields[11]) + Number(fields[12])) / USER_HZ
  } catch {
    return NaN
  }
}

/**
 * CPU seconds of a process plus its reaped children (cutime + cstime): a forking
 * server such as `socat ...,fork` does its work in children that exit per connection.
 */
export function cpuSecondsWithChildren(pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / USER_HZ
  } catch {
    return NaN
  }
}

/** Resident set size of a process in KiB (VmRSS). */
export function rssKiB(pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN)
  } catch {
    return NaN
  }
}

/** CPU seconds of several processes, sampled together. */
export function cpuSnapshot(pids: Record<string, number | undefined>): Record<string, number> {
  return Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]))
}

/** CPU seconds used by each process between two snapshots. */
export function cpuDelta(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  return Object.fromEntries(
    Object.keys(before).map((k) => [k, (after[k] ?? NaN) - (before[k] ?? NaN)]),
  )
}

/** Every child process started by the bench, so a crash or ^C still kills them all. */
const children = new Set<ChildProcess>()

/** Spawns a child process that the bench kills on exit. */
export function spawnTracked(
  cmd: string,
  args: string[],
  options: SpawnOptions = {},
): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...options })
  children.add(child)
  child.once('exit', () => children.delete(child))
  child.stderr?.on('data', () => {
    // Drained so a chatty child cannot block on a full pipe; callers may listen too.
  })
  return child
}

/** Starts tracking a child spawned elsewhere (e.g. with `fork`). */
export function track(child: ChildProcess): ChildProcess {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** Kills every tracked child still running (synchronously usable in 'exit'). */
export function killAllTracked(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill(signal)
  }
}

/** Sends `signal` and waits for the exit (SIGKILL after `graceMs`). */
export function stopChild(
  child: ChildProcess | undefined,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 5000,
): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve()
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill(signal)
  })
}

/** A free TCP port on 127.0.0.1 (closed again; a tiny race with other programs is accepted). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = typeof a === 'object' && a !== null ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

/** True when some socket listens on TCP `port` (any address), from /proc/net/tcp{,6}. */
export function isListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0')
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n')) {
      const cols = line.trim().split(/\s+/)
      // local_address is `ADDR:PORT` in hex; state 0A is LISTEN.
      if (cols[3] === '0A' && cols[1]?.endsWith(`:${hex}`) === true) return true
    }
  }
  return false
}

/**
 * Resolves once something listens on `port`, without connecting to it (a probe
 * connection would start a relay or confuse an iperf3 server).
 */
export async function waitForListen(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!isListening(port)) {
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port}`)
    await sleep(10)
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Rounds to `digits` decimals. */
export function round(x: number, digits = 2): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}
