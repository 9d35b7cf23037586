/**
 * `npm run bench -- --profile DIR`: where the time goes, reproducibly. The CLI, the
 * gateway and the agent are started with bench/profile-preload.ts (`--import`); for each
 * profiled section the bench runs a pfgate-only workload twice (after the section's own
 * measurements, so those are not disturbed): once counting system calls and CPU time,
 * once under the profilers (so their own cost is not counted), and collects per process:
 *
 * - a V8 CPU profile (`DIR/SECTION/ROLE.cpuprofile`, open it in Chrome DevTools or
 *   speedscope) and `ROLE.stats.json`: GC pauses by kind and event-loop delay percentiles
 *   (bench/profile-preload.ts);
 * - system calls counted in the kernel by `perf stat` on syscall tracepoints (no ptrace
 *   stop per call, unlike `strace -c`, so the process runs at full speed while the CPU
 *   profile is taken); needs root and the Debian package linux-perf;
 * - CPU seconds from /proc/PID/stat;
 *
 * and `DIR/SECTION/window.json` with the workload's size (MB echoed, or opens), from
 * which bench/profile-summary.ts prints per-MB and per-open figures.
 *
 * @module
 */
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { sleep } from './util.js'

/** The system calls counted, as perf tracepoint names (`all`: every system call). */
export const SYSCALLS = [
  'read',
  'readv',
  'write',
  'writev',
  'pwrite64',
  'fsync',
  'fdatasync',
  'epoll_wait',
  'epoll_pwait',
  'futex',
] as const

/** What `window.json` records. */
export interface WindowInfo {
  section: string
  /** The workload's size in `unit`s (MB of echoed data, or opens). */
  amount: number
  unit: 'MB' | 'open'
  wallMs: number
  procs: Record<
    string,
    {
      pid: number
      /** CPU seconds in the window: user and kernel, all threads and the main thread. */
      cpu: CpuTimes
      syscalls?: Record<string, number>
      threadsAdded?: number
    }
  >
  /** Why system calls were not counted, if they were not. */
  syscallsMissing?: string
}

/** The preload's URL, for `--import` (compiled next to this file). */
export const PRELOAD = new URL('./profile-preload.js', import.meta.url).href

/** Node flags that load the preload into a component. */
export function profileNodeArgs(): string[] {
  return ['--import', PRELOAD]
}

/** Whether `perf stat` can count syscall tracepoints here; the reason if not. */
export function perfUsable(): string | undefined {
  const r = spawnSync('perf', ['stat', '-x,', '-e', 'syscalls:sys_enter_write', '--', 'true'], {
    encoding: 'utf8',
  })
  if (r.error !== undefined) {
    return 'perf not found (Debian package linux-perf): system calls are not counted'
  }
  if (r.status !== 0 || !/syscalls:sys_enter_write/.test(r.stderr)) {
    return `perf cannot count syscall tracepoints here (root and tracefs needed): ${r.stderr.trim().slice(0, 200)}`
  }
  return undefined
}

/** CPU seconds, user and kernel, of a whole process and of its main thread. */
export interface CpuTimes {
  user: number
  system: number
  mainUser: number
  mainSystem: number
}

function times(statFile: string): [number, number] {
  try {
    const stat = readFileSync(statFile, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return [Number(f[11]) / 100, Number(f[12]) / 100] // utime, stime in USER_HZ ticks
  } catch {
    return [NaN, NaN]
  }
}

function cpuTimes(pid: number): CpuTimes {
  const [user, system] = times(`/proc/${pid}/stat`)
  const [mainUser, mainSystem] = times(`/proc/${pid}/task/${pid}/stat`)
  return { user, system, mainUser, mainSystem }
}

function threads(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).length
  } catch {
    return NaN
  }
}

function startPerf(pid: number, out: string): ChildProcess {
  const events = ['raw_syscalls:sys_enter', ...SYSCALLS.map((s) => `syscalls:sys_enter_${s}`)].join(
    ',',
  )
  return spawn('perf', ['stat', '-x,', '-o', out, '-e', events, '-p', String(pid)], {
    stdio: 'ignore',
  })
}

function readPerf(file: string): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [value, , event] = line.split(',')
    const m = /^(?:raw_syscalls:sys_enter|syscalls:sys_enter_(\w+))$/.exec(event ?? '')
    if (m === null) continue
    counts[m[1] ?? 'all'] = Number(value)
  }
  return counts
}

/**
 * Runs `work` inside one profiling window of the processes in `pids` (role → pid) and
 * leaves `DIR/SECTION/` with each role's profile, stats and system calls.
 */
export async function profileWindow(
  dir: string,
  section: string,
  pids: Record<string, number | undefined>,
  unit: WindowInfo['unit'],
  work: () => Promise<number>,
): Promise<void> {
  const out = join(dir, section)
  mkdirSync(out, { recursive: true })
  writeFileSync(join(dir, 'window'), out)
  const procs = Object.entries(pids).filter((e): e is [string, number] => e[1] !== undefined)
  // Pass 1: system calls and CPU times, with no profiler running in the processes (V8's
  // sampler thread would add its own futex calls and CPU).
  const missing = perfUsable()
  const perf = new Map<string, ChildProcess>()
  if (missing === undefined) {
    for (const [role, pid] of procs) perf.set(role, startPerf(pid, join(out, `${role}.perf`)))
    await sleep(500) // perf attaching to every thread
  }
  const threads0 = procs.map(([, pid]) => threads(pid))
  const cpu0 = procs.map(([, pid]) => cpuTimes(pid))
  const t0 = performance.now()
  const amount = await work()
  const wallMs = performance.now() - t0
  const cpu1 = procs.map(([, pid]) => cpuTimes(pid))
  await Promise.all(
    [...perf.values()].map(
      (p) =>
        new Promise<void>((resolve) => {
          p.once('exit', () => resolve())
          p.kill('SIGINT')
        }),
    ),
  )
  // Pass 2: the same work again under the CPU profiler, GC observer and loop-delay histogram.
  for (const [, pid] of procs) process.kill(pid, 'SIGUSR2')
  await sleep(300) // the profilers starting
  await work()
  for (const [, pid] of procs) process.kill(pid, 'SIGUSR2')
  const stats = (pid: number): string => join(out, `${pid}.stats.json`)
  for (let i = 0; i < 100 && !procs.every(([, pid]) => existsSync(stats(pid))); i++) {
    await sleep(100)
  }
  const info: WindowInfo = { section, amount, unit, wallMs: Math.round(wallMs), procs: {} }
  if (missing !== undefined) info.syscallsMissing = missing
  for (const [i, [role, pid]] of procs.entries()) {
    for (const ext of ['cpuprofile', 'stats.json']) {
      const f = join(out, `${pid}.${ext}`)
      if (existsSync(f)) renameSync(f, join(out, `${role}.${ext}`))
    }
    const [a, b] = [cpu0[i] as CpuTimes, cpu1[i] as CpuTimes]
    const d = (k: keyof CpuTimes): number => Math.round((b[k] - a[k]) * 100) / 100
    const cpu = {
      user: d('user'),
      system: d('system'),
      mainUser: d('mainUser'),
      mainSystem: d('mainSystem'),
    }
    const p: WindowInfo['procs'][string] = { pid, cpu }
    const perfFile = join(out, `${role}.perf`)
    if (existsSync(perfFile)) {
      p.syscalls = readPerf(perfFile)
      // perf -p counts the threads that existed when it attached.
      p.threadsAdded = threads(pid) - (threads0[i] as number)
    }
    info.procs[role] = p
  }
  writeFileSync(join(out, 'window.json'), JSON.stringify(info, null, 2))
}
