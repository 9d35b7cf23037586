/**
 * The minimal Node HTTP/2 chains: pfgate's three hops shaped exactly as pfgate shapes
 * them, as three Node processes with none of pfgate's code (bench/node-h2-chain-hop.ts):
 *
 * - `h2`: a local forwarder (clear TCP in, a stream per connection on one shared TLS
 *   HTTP/2 session), a "gateway" (HTTP/2 over TLS in, a stream per stream on one shared
 *   mutual-TLS HTTP/2 session to the agent, 200 after the agent's 200) and an "agent"
 *   (HTTP/2 over mutual TLS in, a TCP connection per stream, 200 once connected);
 * - `pool`: the same, but the gateway→agent leg is a pool of pre-established mutual-TLS
 *   connections, one per stream (a target line, one status byte, then the bytes).
 *
 * pfgate's HTTP/2 settings and high-water mark, the dev PKI, and pfgate's process flags
 * (the gateway and the agent with src/shared/node-flags.ts's, the forwarder with none, as
 * the bench runs pfgate). They are what the same work costs in Node with nothing of ours:
 * the floor pfgate's open latency and duplex throughput are held to.
 *
 * @module
 */
import { fileURLToPath } from 'node:url'
import { relayNodeFlags } from '../src/shared/node-flags.js'
import { startHops } from './node-chain.js'
import type { NodeChain } from './node-chain.js'

const HOP = fileURLToPath(new URL('./node-h2-chain-hop.js', import.meta.url))

/**
 * Which gateway→agent leg: one shared HTTP/2 session (`h2`, pfgate's), or a pool of
 * pre-established mutual-TLS connections, one per stream, refilled with full handshakes
 * (`pool`), with resumed TLS sessions (`pool-resume`: each refill presents the last
 * session ticket), or filled once with `poolSize` before the chain listens and refilled
 * only when empty (`pool-prefilled`: no handshake while measuring, the pool's critical
 * path alone — size it above the opens it will serve).
 */
export type H2ChainVariant = 'h2' | 'pool' | 'pool-resume' | 'pool-prefilled'

const POOL_MODES: Record<Exclude<H2ChainVariant, 'h2'>, string> = {
  pool: 'refill',
  'pool-resume': 'resume',
  'pool-prefilled': 'prefill',
}

/** Starts a minimal HTTP/2 chain in front of `127.0.0.1:targetPort`. */
export function startNodeH2Chain(
  variant: H2ChainVariant,
  targetPort: number,
  pkiDir: string,
  options: { poolSize?: number; nodeArgs?: string[] } = {},
): Promise<NodeChain> {
  const relay = [...relayNodeFlags(), ...(options.nodeArgs ?? [])]
  const pool = variant !== 'h2'
  const suffix = pool ? '-pool' : ''
  return startHops(
    HOP,
    [
      { role: 'forwarder', nodeArgs: options.nodeArgs ?? [] },
      {
        role: `gateway${suffix}`,
        nodeArgs: relay,
        extraArgs: pool ? [String(options.poolSize ?? 8), POOL_MODES[variant]] : [],
      },
      { role: `agent${suffix}`, nodeArgs: relay },
    ],
    targetPort,
    pkiDir,
  )
}
