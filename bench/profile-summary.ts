/**
 * `node dist/bench/profile-summary.js DIR`: summarizes what `npm run bench -- --profile DIR`
 * collected (bench/profile.ts). Per section and process: where the busy CPU time went
 * (ours = src/, Node's JavaScript, node_modules, native code called from JavaScript, native
 * code outside any JavaScript = "(program)", GC), the top self-time functions and our own
 * top functions, GC pauses, event-loop delay percentiles, and system calls per MB echoed or
 * per open. Written to DIR/summary.txt as well.
 *
 * @module
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { WindowInfo } from './profile.js'
import type { WindowStats } from './profile-preload.js'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[]
  samples: number[]
  timeDeltas: number[]
}

export const CATEGORIES = ['ours', 'node', 'deps', 'native', 'program', 'gc', 'other'] as const
type Category = (typeof CATEGORIES)[number] | 'idle'

/** Which part of the process a profile frame belongs to. */
export function categorize(f: CallFrame): Category {
  if (f.functionName === '(idle)') return 'idle'
  if (f.functionName === '(garbage collector)') return 'gc'
  if (f.functionName === '(program)' || f.functionName === '(root)') return 'program'
  if (f.url === '') return 'native'
  if (f.url.startsWith('node:')) return 'node'
  if (f.url.includes('/node_modules/')) return 'deps'
  if (/\/(dist\/)?src\//.test(f.url)) return 'ours'
  return 'other'
}

/** A short location: `src/shared/duplex-relay.js:120`, `node:net:830`, `pino/lib/…:12`. */
function where(f: CallFrame): string {
  if (f.url === '') return ''
  const u = f.url
    .replace(/^file:\/\/.*?\/(dist\/)?(src|bench)\//, '$2/')
    .replace(/^.*\/node_modules\//, '')
  return `${u}:${f.lineNumber + 1}`
}

export interface ProfileSummary {
  /** Samples taken while the main thread was busy / idle (one per ~1 ms it was sampled). */
  busy: number
  idle: number
  shares: Record<(typeof CATEGORIES)[number], number>
  top: { name: string; where: string; category: Category; share: number }[]
  topOurs: { name: string; where: string; share: number }[]
}

/**
 * Self time per category and function over the busy (non-idle) samples. Each sample counts
 * once: on a loaded machine the sampler thread is descheduled too, and weighting samples by
 * the time since the previous one would charge that wait to whatever ran last. A native
 * function (a binding such as `writeBuffer`) is named with its JavaScript caller.
 */
export function summarizeProfile(p: CpuProfile, topN = 12): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]))
  const parent = new Map<number, number>()
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map<string, { f: CallFrame; caller: string; n: number }>()
  let idle = 0
  let busy = 0
  const shares = Object.fromEntries(CATEGORIES.map((c) => [c, 0])) as ProfileSummary['shares']
  // The first sample carries the profiler's start-up; skip it.
  for (const id of p.samples.slice(1)) {
    const f = byId.get(id)
    if (f === undefined) continue
    const c = categorize(f)
    if (c === 'idle') {
      idle++
      continue
    }
    busy++
    shares[c]++
    const up = parent.get(id)
    const caller = c === 'native' && up !== undefined ? (byId.get(up)?.functionName ?? '') : ''
    const key = `${f.functionName}@${f.url}:${f.lineNumber}<${caller}`
    const e = self.get(key) ?? { f, caller, n: 0 }
    e.n++
    self.set(key, e)
  }
  for (const c of CATEGORIES) shares[c] = busy > 0 ? shares[c] / busy : 0
  const sorted = [...self.values()].sort((a, b) => b.n - a.n)
  const item = (e: { f: CallFrame; caller: string; n: number }) => ({
    name: (e.f.functionName || '(anonymous)') + (e.caller !== '' ? ` <- ${e.caller}` : ''),
    where: where(e.f),
    category: categorize(e.f),
    share: e.n / busy,
  })
  return {
    busy,
    idle,
    shares,
    top: sorted.slice(0, topN).map(item),
    topOurs: sorted
      .filter((e) => categorize(e.f) === 'ours')
      .slice(0, 6)
      .map((e) => {
        const { name, where: w, share } = item(e)
        return { name, where: w, share }
      }),
  }
}

const pct = (x: number): string => `${(x * 100).toFixed(1)} %`

/** The text summary of one profiled section's directory. */
export function summarizeSection(dir: string): string {
  const info = JSON.parse(readFileSync(join(dir, 'window.json'), 'utf8')) as WindowInfo
  const per = info.unit === 'MB' ? 'per MB echoed' : 'per open'
  const out: string[] = [
    `== ${info.section}: ${info.amount} ${info.unit === 'MB' ? 'MB echoed (each direction)' : 'opens'} in ${(info.wallMs / 1000).toFixed(1)} s`,
  ]
  if (info.syscallsMissing !== undefined) out.push(`   system calls: ${info.syscallsMissing}`)
  for (const [role, p] of Object.entries(info.procs)) {
    const c = p.cpu
    const total = c.user + c.system
    out.push(
      '',
      `-- ${role} (pid ${p.pid}): CPU ${total.toFixed(2)} s = ${((total * 1000) / info.amount).toFixed(3)} ms ${per}` +
        ` (kernel ${pct(c.system / total)}; main thread ${pct((c.mainUser + c.mainSystem) / total)}, of which kernel ${pct(c.mainSystem / (c.mainUser + c.mainSystem))})`,
    )
    const profFile = join(dir, `${role}.cpuprofile`)
    if (existsSync(profFile)) {
      const s = summarizeProfile(JSON.parse(readFileSync(profFile, 'utf8')) as CpuProfile)
      out.push(
        `   main thread samples: ${s.busy} busy, ${s.idle} idle; busy: ` +
          CATEGORIES.filter((c) => s.shares[c] >= 0.0005)
            .map((c) => `${c} ${pct(s.shares[c])}`)
            .join(', '),
        '   top self time:',
        ...s.top.map(
          (t) => `     ${pct(t.share).padStart(7)}  ${t.category.padEnd(7)} ${t.name}  ${t.where}`,
        ),
        '   ours, top self time:',
        ...s.topOurs.map((t) => `     ${pct(t.share).padStart(7)}  ${t.name}  ${t.where}`),
      )
    } else {
      out.push('   (no CPU profile)')
    }
    const statsFile = join(dir, `${role}.stats.json`)
    if (existsSync(statsFile)) {
      const st = JSON.parse(readFileSync(statsFile, 'utf8')) as WindowStats
      const gc = (k: keyof WindowStats['gc']): string =>
        `${st.gc[k].count} (${st.gc[k].ms.toFixed(1)} ms)`
      out.push(
        `   GC pauses: scavenge ${gc('scavenge')}, mark-compact ${gc('markCompact')}, incremental ${gc('incremental')}, weak callbacks ${gc('weakCallbacks')}`,
        `   event-loop delay: p50 ${st.loopDelay.p50} ms, p99 ${st.loopDelay.p99} ms, max ${st.loopDelay.max} ms`,
      )
    }
    if (p.syscalls !== undefined) {
      const sc = p.syscalls
      const perUnit = (k: string): string => ((sc[k] ?? 0) / info.amount).toFixed(1)
      out.push(
        `   system calls ${per}: all ${perUnit('all')}; ` +
          Object.keys(sc)
            .filter((k) => k !== 'all' && (sc[k] ?? 0) > 0)
            .map((k) => `${k} ${perUnit(k)}`)
            .join(', ') +
          (p.threadsAdded !== undefined && p.threadsAdded > 0
            ? ` (${p.threadsAdded} threads started during the window were not counted)`
            : ''),
      )
    }
  }
  return out.join('\n')
}

/** Summarizes every profiled section under `dir`; writes DIR/summary.txt; returns the text. */
export function summarizeProfileDir(dir: string): string {
  const sections = readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(dir, d.name, 'window.json')))
    .map((d) => summarizeSection(join(dir, d.name)))
  const note =
    'Shares count main-thread samples taken while the thread was not idle: where more threads\n' +
    'want to run than there are cores, they include time spent waiting for a core, charged to\n' +
    'what the thread was doing (often a system call that woke another process). System calls\n' +
    'and CPU seconds come from a separate run of the same work without the profiler.\n\n'
  const text = note + sections.join('\n\n') + '\n'
  writeFileSync(join(dir, 'summary.txt'), text)
  return text
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const dir = process.argv[2]
  if (dir === undefined) {
    process.stderr.write('usage: node dist/bench/profile-summary.js DIR\n')
    process.exit(2)
  }
  process.stdout.write(summarizeProfileDir(dir))
}
