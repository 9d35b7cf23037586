/**
 * The UDP section (`npm run bench -- --only udp`): UDP flows through pfgate (CLI →
 * gateway → agent → the dev cluster's UDP demo pod, static dialer) against the same
 * client talking to the pod directly and through a chain of three `socat` UDP relays
 * (pfgate's hop count), in the same run. Self-contained: its own dev cluster.
 *
 * - **Round trip**: one datagram of 64 bytes at a time, the next sent when the echo came
 *   back; p50 and p99 over the run.
 * - **Rate**: 32 datagrams of 64 bytes in flight (a new one per echo), for a fixed time;
 *   echoed datagrams per second, and the loss (sent − echoed).
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import type { Socket as UdpSocket } from 'node:dgram'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { PFGATE_BIN, startDevCluster } from '../src/dev/cluster.js'
import { freePort, quantile, sleep, spawnTracked, stopChild } from './util.js'

/** One path's figures. */
export interface UdpPathResult {
  p50Us: number
  p99Us: number
  /** Echoed datagrams per second with 32 in flight. */
  perSecond: number
  sent: number
  lost: number
}

/** What the UDP section measured. */
export interface UdpBenchResult {
  pfgate: UdpPathResult
  direct: UdpPathResult
  socat3: UdpPathResult
}

/** Round trips and a windowed rate against `port` on 127.0.0.1. */
async function measure(port: number, rtts: number, rateMs: number): Promise<UdpPathResult> {
  const s: UdpSocket = createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r))
  const payload = Buffer.alloc(64, 7)
  let onEcho: (() => void) | undefined
  s.on('message', () => onEcho?.())
  // Warm-up: the first datagram opens the flow (and socat's child).
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 1000)
      onEcho = () => {
        clearTimeout(t)
        resolve()
      }
      s.send(payload, port, '127.0.0.1')
    })
  }
  const samples: number[] = []
  for (let i = 0; i < rtts; i++) {
    const t0 = process.hrtime.bigint()
    const ok = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 1000)
      onEcho = () => {
        clearTimeout(t)
        resolve(true)
      }
      s.send(payload, port, '127.0.0.1')
    })
    if (ok) samples.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  let sent = 0
  let echoed = 0
  const end = Date.now() + rateMs
  await new Promise<void>((resolve) => {
    const send = (): void => {
      if (Date.now() >= end) return
      sent++
      s.send(payload, port, '127.0.0.1')
    }
    onEcho = () => {
      echoed++
      send()
    }
    for (let i = 0; i < 32; i++) send()
    // A lost datagram shrinks the window; top it up every 50 ms.
    const topUp = setInterval(() => {
      if (Date.now() >= end) return
      while (sent - echoed < 32) send()
    }, 50)
    setTimeout(() => {
      clearInterval(topUp)
      resolve()
    }, rateMs + 300)
  })
  s.close()
  return {
    p50Us: Math.round(quantile(samples, 0.5)),
    p99Us: Math.round(quantile(samples, 0.99)),
    perSecond: Math.round(echoed / (rateMs / 1000)),
    sent,
    lost: sent - echoed,
  }
}

/** A chain of three socat UDP relays in front of `target`; resolves with its first port. */
async function socatChain(target: number): Promise<{ port: number; hops: ChildProcess[] }> {
  const ports = [await freePort(), await freePort(), await freePort()]
  const hops: ChildProcess[] = []
  for (let i = 0; i < 3; i++) {
    const next = i < 2 ? ports[i + 1] : target
    hops.push(
      spawnTracked('socat', [
        // One peer per hop (the bench's one client), like a flow: no fork per datagram.
        `UDP4-LISTEN:${ports[i]},bind=127.0.0.1,reuseaddr`,
        `UDP4:127.0.0.1:${next}`,
      ]),
    )
  }
  await sleep(300)
  return { port: ports[0] as number, hops }
}

/** Runs the section. */
export async function benchUdp(options: {
  quick: boolean
  log: (line: string) => void
}): Promise<UdpBenchResult> {
  const rtts = options.quick ? 300 : 3000
  const rateMs = options.quick ? 2000 : 8000
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-bench-udp-'))
  const cluster = await startDevCluster({
    dir,
    port: 0,
    host: '127.0.0.1',
    logLevel: 'error',
    childStderr: 'ignore',
    netns: false,
  })
  let cli: ChildProcess | undefined
  let chain: { hops: ChildProcess[] } | undefined
  try {
    const podPort = (cluster.podPorts.dns as number[])[1] as number
    cli = spawnTracked(
      process.execPath,
      [PFGATE_BIN, 'port-forward', '--quiet', 'dns', ':7007/udp'],
      {
        env: { ...process.env, KUBECONFIG: cluster.kubeconfig, HOME: dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: cli!.stdout! })
      rl.once('line', resolve)
      cli!.once('exit', () => reject(new Error('pfgate port-forward exited')))
    })
    const local = Number(/:(\d+) -> 7007\/udp$/.exec(line)?.[1])
    options.log(`udp: pfgate ${local} -> pod 7007/udp (host port ${podPort})`)
    const pfgate = await measure(local, rtts, rateMs)
    const direct = await measure(podPort, rtts, rateMs)
    const c = await socatChain(podPort)
    chain = c
    const socat3 = await measure(c.port, rtts, rateMs)
    return { pfgate, direct, socat3 }
  } finally {
    for (const h of chain?.hops ?? []) await stopChild(h)
    if (cli !== undefined) await stopChild(cli)
    await cluster.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
