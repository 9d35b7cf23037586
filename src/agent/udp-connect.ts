/**
 * Connects an agent-side UDP socket to a pod's address, for both dialers. `connect(2)`
 * on a UDP socket fixes its peer: the kernel then drops datagrams from any other
 * address or port, and an ICMP port-unreachable for the peer surfaces as ECONNREFUSED.
 *
 * @module
 */
import type { Socket as UdpSocket } from 'node:dgram'
import { isIP } from 'node:net'
import { appError } from '../shared/errors.js'
import type { PodTarget } from './pod-dialer.js'

/**
 * Connects `socket` to `address:port`; on failure closes it and rejects with an AppError.
 * Resolves `true` when connected, `false` for a socket that cannot be: Node gives a UDP
 * handle received over IPC (the netns helper's) its IPv4 `connect` whatever its family,
 * so an IPv6 one stays unconnected and its datagrams are sent with an explicit address;
 * the relay's source check then does the kernel's filtering, and ICMP errors go unseen.
 */
export function connectUdp(
  socket: UdpSocket,
  address: string,
  port: number,
  target: PodTarget,
  received = false,
): Promise<boolean> {
  if (received && isIP(address) === 6) return Promise.resolve(false)
  return new Promise((resolve, reject) => {
    try {
      socket.connect(port, address, (err?: Error) => {
        if (err === undefined || err === null) {
          resolve(true)
          return
        }
        socket.close()
        reject(
          appError(
            'PFG_ERR_AGENT_CONNECT_FAILED',
            `error forwarding port ${port}/udp to pod ${target.namespace}/${target.name}: ${err.message}`,
            { cause: err },
          ),
        )
      })
    } catch (err) {
      socket.close()
      reject(err instanceof Error ? err : new Error(String(err)))
    }
  })
}
