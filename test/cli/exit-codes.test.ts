/**
 * What the README says about Ctrl-C: `pfgate` exits 0, and through `npx` (npm exec) the
 * shell sees the signal instead, because the terminal's SIGINT reaches npm too and npm ends
 * itself with it. The terminal is played by a SIGINT to the whole process group.
 * `demo-pod` stands in for port-forward: both end on SIGINT with 0 (port-forward's own
 * SIGINT exit is tested end to end in test/e2e/port-forward.test.ts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { PFGATE_BIN } from '../../src/dev/cluster.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

/** Runs the command in its own process group, Ctrl-Cs the group once it is up. */
function ctrlC(
  cmd: string,
  args: string[],
): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => {
      process.kill(-(p.pid as number), 'SIGKILL')
      reject(new Error(`${cmd} did not start or stop: ${out} ${err}`))
    }, 30_000)
    p.stderr.on('data', (d: Buffer) => (err += d.toString()))
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (/"ports"/.test(out)) process.kill(-(p.pid as number), 'SIGINT')
    })
    p.once('error', reject)
    p.once('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal })
    })
  })
}

const POD = ['demo-pod', '--listen', '127.0.0.1:0']

test('Ctrl-C: pfgate exits 0', async () => {
  assert.deepEqual(await ctrlC(process.execPath, [PFGATE_BIN, ...POD]), { code: 0, signal: null })
})

test('Ctrl-C through npx: npm ends with the signal (the shell shows 130), as README says', async () => {
  const r = await ctrlC('npm', ['exec', '--offline', '--', 'pfgate', ...POD])
  assert.deepEqual(r, { code: null, signal: 'SIGINT' })
})
