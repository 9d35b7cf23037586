/**
 * Real pods in real network namespaces: `pfgate dev --netns` runs the demo pods
 * inside namespaces (unreachable from the host), and the agents' netns dialer
 * enters them. Through CLI → gateway → agent → namespace: bulk data, an IPv6-only
 * listener, a refused port, a helper killed mid-run, and the namespace deleted.
 * Needs root, `ip` and `nsenter`: CI runs as root, so these must run, not skip.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import type { ChildProcess } from 'node:child_process'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import { dial, echoRoundTrip, eventually } from '../helpers/net.js'
import { DEV_NODES, netnsUnavailable } from '../../src/dev/cluster.js'
import type { DevCluster } from '../../src/dev/cluster.js'

const why = netnsUnavailable()
if (why !== undefined) {
  throw new Error(`network-namespace tests need root, ip and nsenter: ${why}`)
}

let cluster: DevCluster & { cleanup(): Promise<void> }
let cli: CliProcess
let ports: Map<number, number>
const extra: ChildProcess[] = []

/** This cluster's netns helpers: children of its agents (other clusters may run on the machine). */
function helperPids(): number[] {
  const agents = new Set(
    DEV_NODES.map((n) => cluster.pid(`agent:${n}`)).filter((p): p is number => p !== undefined),
  )
  try {
    return execFileSync('pgrep', ['-f', 'pfgate-netns-helper'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l !== '')
      .map(Number)
      .filter((pid) => agents.has(parentPid(pid) ?? -1))
  } catch {
    return []
  }
}

function parentPid(pid: number): number | undefined {
  try {
    // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces, so split after ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return undefined // already gone
  }
}

before(async () => {
  cluster = await startTestCluster({}, { netns: true })
  assert.ok(cluster.podNetns !== undefined, 'the cluster runs its pods in namespaces')
  // An IPv6-only echo listener inside the echo pod's namespace: reached by the [::1] fallback.
  const ns = cluster.podNetns.echo as string
  const v6 = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '-e',
      `require('net').createServer({allowHalfOpen:true},s=>s.pipe(s)).listen(7000,'::1',()=>console.log('up'))`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  extra.push(v6)
  await new Promise((resolve) => v6.stdout?.once('data', resolve))
  cli = runCli(['port-forward', '--quiet', 'echo', ':5000', ':6000', ':7000', ':7001'], {
    KUBECONFIG: cluster.kubeconfig,
    HOME: cluster.dir,
  })
  const fwd = parseForwarding(await cli.waitForLines(8))
  ports = new Map(fwd.map((f) => [f.remote, f.port]))
})
after(async () => {
  await cli?.stop()
  for (const p of extra) p.kill()
  await cluster?.cleanup()
})

test('the pods are not reachable from the host namespace', async () => {
  for (const port of [5000, 6000]) {
    await assert.rejects(dial(port), /ECONNREFUSED/, `host 127.0.0.1:${port} must not be the pod`)
  }
})

test('16 MiB both ways through CLI → gateway → agent → namespace, sha256 equal', async () => {
  const r = await echoRoundTrip(ports.get(5000) as number, 16 * 1024 * 1024)
  assert.equal(r.receivedBytes, 16 * 1024 * 1024)
  assert.equal(r.received, r.sent)
  const r2 = await echoRoundTrip(ports.get(6000) as number, 1024 * 1024, '::1')
  assert.equal(r2.received, r2.sent)
})

test('an IPv6-only listener inside the namespace is reached through the [::1] fallback', async () => {
  const r = await echoRoundTrip(ports.get(7000) as number, 256 * 1024)
  assert.equal(r.received, r.sent)
})

test('a refused port reports the kubelet-style text and closes only that connection', async () => {
  const before = cli.stderr().length
  const s = await dial(ports.get(7001) as number)
  s.on('data', () => undefined)
  await new Promise<void>((resolve) => {
    s.once('end', () => resolve())
    s.once('close', () => resolve())
    s.once('error', () => resolve())
  })
  s.destroy()
  await cli.waitForStderr(
    /failed to connect to localhost:7001 inside namespace "[^"]+", IPv4: dial tcp4 127\.0\.0\.1:7001: connect: connection refused IPv6 dial tcp6 \[::1\]:7001: connect: connection refused/,
  )
  assert.ok(cli.stderr().length > before)
  const r = await echoRoundTrip(ports.get(5000) as number, 1024)
  assert.equal(r.received, r.sent)
})

test('a helper killed mid-run is replaced; forwarding works again', async () => {
  const pids = helperPids()
  assert.ok(pids.length >= 1, 'a helper runs for each used namespace')
  for (const pid of pids) process.kill(pid, 'SIGKILL')
  await eventually(
    async () => {
      try {
        const r = await echoRoundTrip(ports.get(5000) as number, 64 * 1024, '127.0.0.1', 5000)
        return r.received === r.sent
      } catch {
        return false
      }
    },
    15_000,
    'forwarding after the helper was killed',
  )
  const fresh = helperPids()
  assert.ok(
    fresh.every((p) => !pids.includes(p)),
    'new helper processes',
  )
})

test('the namespace deleted: a clean error, and its helper ends', async () => {
  const ns = cluster.podNetns?.echo as string
  execFileSync('ip', ['netns', 'del', ns])
  const s = await dial(ports.get(5000) as number)
  s.on('data', () => undefined)
  await new Promise<void>((resolve) => {
    s.once('end', () => resolve())
    s.once('close', () => resolve())
    s.once('error', () => resolve())
  })
  s.destroy()
  await cli.waitForStderr(new RegExp(`network namespace[^\\n]*${ns}`))
  // The echo pod's helper is gone (the web pod's namespace was never used here).
  await eventually(
    () => helperPids().length === 0,
    10_000,
    'the helper of the deleted namespace to exit',
  )
  assert.equal(cli.proc.exitCode, null, 'the CLI keeps running')
})
