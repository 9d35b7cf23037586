/**
 * The minimal Node TLS pipe chain: pfgate's three hops (local forwarder, gateway, agent)
 * with the same TLS as pfgate's — TLS to the gateway, mutual TLS to the agent, clear to
 * the pod — as three Node processes that only pipe sockets (bench/node-chain-hop.ts).
 * None of pfgate's code runs in it: it is what the same work costs in Node with nothing
 * of ours, the baseline that tells our relay's cost from Node's.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { cpuSeconds, freePort, spawnTracked, stopChild } from './util.js'

/** A running chain. */
export interface NodeChain {
  /** Where the client connects. */
  port: number
  /** The hop processes, client side first. */
  hops: ChildProcess[]
  /** CPU seconds of every hop so far. */
  cpuSeconds(): number[]
  stop(): Promise<void>
}

const HOP = fileURLToPath(new URL('./node-chain-hop.js', import.meta.url))

/** Starts the chain in front of `127.0.0.1:targetPort`; `pkiDir` holds the dev PKI. */
export function startNodeChain(targetPort: number, pkiDir: string): Promise<NodeChain> {
  return startHops(
    HOP,
    ['client', 'gateway', 'agent'].map((role) => ({ role })),
    targetPort,
    pkiDir,
  )
}

/** One hop of a chain: its role, node flags and extra arguments after the PKI dir. */
export interface HopSpec {
  role: string
  nodeArgs?: string[]
  extraArgs?: string[]
}

/**
 * Starts `script ROLE LISTEN_PORT NEXT_PORT PKI_DIR ...extraArgs` for every hop, from the
 * target side (so that every hop's next hop already listens), each in its own process;
 * each prints a line on stdout once it listens.
 */
export async function startHops(
  script: string,
  specs: readonly HopSpec[],
  targetPort: number,
  pkiDir: string,
): Promise<NodeChain> {
  const ports: number[] = []
  for (let i = 0; i < specs.length; i++) ports.push(await freePort())
  const hops: ChildProcess[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(hops.map((h) => stopChild(h, 'SIGTERM', 2000)))
  }
  try {
    for (let i = specs.length - 1; i >= 0; i--) {
      const spec = specs[i] as HopSpec
      const next = i + 1 < specs.length ? (ports[i + 1] as number) : targetPort
      const hop = spawnTracked(
        process.execPath,
        [
          ...(spec.nodeArgs ?? []),
          script,
          spec.role,
          String(ports[i]),
          String(next),
          pkiDir,
          ...(spec.extraArgs ?? []),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      )
      hops.unshift(hop)
      await new Promise<void>((resolve, reject) => {
        let err = ''
        hop.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)))
        hop.stdout?.once('data', () => resolve())
        hop.once('exit', (code) =>
          reject(new Error(`chain hop ${spec.role} exited (${code}): ${err}`)),
        )
      })
    }
  } catch (err) {
    await stop()
    throw err
  }
  return {
    port: ports[0] as number,
    hops,
    cpuSeconds: () => hops.map((h) => cpuSeconds(h.pid)),
    stop,
  }
}
