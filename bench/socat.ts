/**
 * Baseline relay chains built from socat (Debian's), one process per hop with
 * `fork` (a child per connection), the same shape as pfgate's chain:
 *
 * - `plain2`: client → socat → socat → target (issue 2's "plain two-hop TCP relay chain");
 * - `plain3`: client → socat → socat → socat → target (pfgate's three hops, no TLS);
 * - `tls3`: pfgate's three hops with the same TLS: a local listener that speaks TLS to
 *   the "gateway" (like the CLI), the "gateway" terminating TLS with the gateway's dev
 *   certificate and opening mutual TLS to the "agent" with the gateway's client
 *   certificate, and the "agent" terminating mutual TLS with its node certificate and
 *   connecting to the target in clear.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { cpuSecondsWithChildren, freePort, spawnTracked, stopChild, waitForListen } from './util.js'

/** The chains. */
export type SocatChainKind = 'plain2' | 'plain3' | 'tls3'

/** A running chain. */
export interface SocatChain {
  kind: SocatChainKind
  /** Where the client connects. */
  port: number
  /** The hop processes, client side first. */
  hops: ChildProcess[]
  /** CPU seconds of every hop so far (with reaped per-connection children). */
  cpuSeconds(): number[]
  stop(): Promise<void>
}

/** Human names of the chains. */
export const SOCAT_CHAIN_NAMES: Record<SocatChainKind, string> = {
  plain2: 'socat 2-hop TCP',
  plain3: 'socat 3-hop TCP',
  tls3: 'socat 3-hop TLS',
}

/** Starts a chain in front of `127.0.0.1:targetPort`; `pkiDir` holds the dev PKI. */
export async function startSocatChain(
  kind: SocatChainKind,
  targetPort: number,
  pkiDir: string,
): Promise<SocatChain> {
  const hopCount = kind === 'plain2' ? 2 : 3
  const ports: number[] = []
  for (let i = 0; i < hopCount; i++) ports.push(await freePort())
  const f = (name: string): string => join(pkiDir, name)
  // Listen and connect addresses of each hop, client side first.
  const addresses: [string, string][] = []
  for (let i = 0; i < hopCount; i++) {
    const listenPort = ports[i] as number
    const next = i + 1 < hopCount ? (ports[i + 1] as number) : targetPort
    let listen = `TCP-LISTEN:${listenPort},bind=127.0.0.1,reuseaddr,fork`
    let connect = `TCP:127.0.0.1:${next}`
    if (kind === 'tls3') {
      if (i === 0) {
        // The local forwarder: verifies the gateway's certificate (IP SAN 127.0.0.1).
        connect = `OPENSSL:127.0.0.1:${next},cafile=${f('ca.crt')}`
      } else if (i === 1) {
        // The gateway: server TLS toward clients, mutual TLS toward the agent.
        listen = `OPENSSL-LISTEN:${listenPort},bind=127.0.0.1,reuseaddr,fork,cert=${f('gateway.crt')},key=${f('gateway.key')},verify=0`
        connect = `OPENSSL:127.0.0.1:${next},cafile=${f('ca.crt')},cert=${f('gateway-client.crt')},key=${f('gateway-client.key')}`
      } else {
        // The agent: mutual TLS from the gateway, clear toward the pod.
        listen = `OPENSSL-LISTEN:${listenPort},bind=127.0.0.1,reuseaddr,fork,cert=${f('agent-node-a.crt')},key=${f('agent-node-a.key')},cafile=${f('ca.crt')},verify=1`
      }
    }
    addresses.push([listen, connect])
  }
  const hops: ChildProcess[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(hops.map((h) => stopChild(h, 'SIGTERM', 2000)))
  }
  try {
    // Start from the target side so every hop's next hop already listens.
    for (let i = hopCount - 1; i >= 0; i--) {
      const [listen, connect] = addresses[i] as [string, string]
      const hop = spawnTracked('socat', [listen, connect])
      hops.unshift(hop)
      await Promise.race([
        waitForListen(ports[i] as number),
        new Promise<never>((_, reject) =>
          hop.once('exit', (code) => reject(new Error(`socat hop ${i} exited (${code})`))),
        ),
      ])
    }
  } catch (err) {
    await stop()
    throw err
  }
  return {
    kind,
    port: ports[0] as number,
    hops,
    cpuSeconds: () => hops.map((h) => cpuSecondsWithChildren(h.pid)),
    stop,
  }
}
