/**
 * Test helpers: run the real `pfgate` CLI as a child process.
 */
import { spawn } from 'node:child_process'
import type { ChildProcessWithoutNullStreams } from 'node:child_process'
import { PFGATE_BIN } from '../../src/dev/cluster.js'

/** A running CLI process with its output so far. */
export interface CliProcess {
  proc: ChildProcessWithoutNullStreams
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code (or -signal). */
  exited: Promise<number>
  /** Waits until stdout has `n` lines; rejects on exit or timeout. */
  waitForLines(n: number, timeoutMs?: number): Promise<string[]>
  /** Waits until stderr matches. */
  waitForStderr(re: RegExp, timeoutMs?: number): Promise<void>
  stop(signal?: NodeJS.Signals): Promise<number>
}

/** Spawns `pfgate ...args`. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const proc = spawn(process.execPath, [PFGATE_BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number>((resolve) =>
    proc.once('exit', (code, signal) => resolve(code ?? -(signal !== null ? 1 : 0))),
  )
  const poll = (cond: () => boolean, what: string, timeoutMs: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const started = Date.now()
      const tick = (): void => {
        if (cond()) return resolve()
        if (proc.exitCode !== null || proc.signalCode !== null) {
          return reject(
            new Error(
              `pfgate exited (${proc.exitCode ?? proc.signalCode}) before ${what}\nstdout: ${out}\nstderr: ${err}`,
            ),
          )
        }
        if (Date.now() - started > timeoutMs) {
          return reject(new Error(`timed out waiting for ${what}\nstdout: ${out}\nstderr: ${err}`))
        }
        setTimeout(tick, 20)
      }
      tick()
    })
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitForLines(n, timeoutMs = 15_000) {
      await poll(
        () => out.split('\n').filter((l) => l !== '').length >= n,
        `${n} stdout lines`,
        timeoutMs,
      )
      return out.split('\n').filter((l) => l !== '')
    },
    waitForStderr(re, timeoutMs = 15_000) {
      return poll(() => re.test(err), `stderr ${String(re)}`, timeoutMs)
    },
    async stop(signal = 'SIGINT') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal)
      return exited
    },
  }
}

/** Runs the CLI to completion. */
export async function runCliToEnd(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 20_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = runCli(args, env)
  const timer = setTimeout(() => p.proc.kill('SIGKILL'), timeoutMs)
  const code = await p.exited
  clearTimeout(timer)
  return { code, stdout: p.stdout(), stderr: p.stderr() }
}

/** Parses `Forwarding from ADDR:PORT -> REMOTE` lines. */
export function parseForwarding(
  lines: string[],
): { address: string; port: number; remote: number; protocol: 'tcp' | 'udp' }[] {
  return lines.map((l) => {
    const m = /^Forwarding from (\[[^\]]+\]|[^:]+):(\d+) -> (\d+)(\/udp)?$/.exec(l)
    if (m === null) throw new Error(`not a Forwarding line: ${JSON.stringify(l)}`)
    return {
      address: (m[1] as string).replace(/^\[|\]$/g, ''),
      port: Number(m[2]),
      remote: Number(m[3]),
      protocol: m[4] === undefined ? 'tcp' : 'udp',
    }
  })
}
