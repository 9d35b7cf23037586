/**
 * The netns dialer's connect errors, worded like the kubelet's and containerd's so a
 * user sees the text they know (`failed to connect to localhost:5000 inside namespace
 * …, IPv4: dial tcp4 127.0.0.1:5000: connect: connection refused IPv6 …`).
 *
 * @module
 */
import { isIP } from 'node:net'
import { appError } from '../shared/errors.js'
import type { AppError, AppErrorCode } from '../shared/errors.js'
import type { HelperAttemptError } from './netns-helper.js'

/** errno → the text Go prints for it, so messages read like the kubelet's. */
const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ENETUNREACH: 'network is unreachable',
  EHOSTUNREACH: 'no route to host',
  EADDRNOTAVAIL: 'cannot assign requested address',
  EAFNOSUPPORT: 'address family not supported by protocol',
  ECONNRESET: 'connection reset by peer',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EAGAIN: 'resource temporarily unavailable',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in system',
  ENOBUFS: 'no buffer space available',
}

/**
 * Builds the kubelet/containerd-style error for failed attempts, e.g.
 * `failed to connect to localhost:5000 inside namespace "/run/netns/x", IPv4: dial tcp4
 * 127.0.0.1:5000: connect: connection refused IPv6 dial tcp6 [::1]:5000: connect: connection refused`,
 * followed by `, pod IPs: …` when the pod's own addresses were tried too.
 * Code: a timeout wins, then a refusal, else `PFG_ERR_AGENT_CONNECT_FAILED`.
 */
export function connectError(
  path: string,
  port: number,
  errors: readonly HelperAttemptError[],
  protocol: 'tcp' | 'udp' = 'tcp',
): AppError {
  const text = (e: HelperAttemptError | undefined): string => {
    if (e === undefined) return 'not attempted'
    const addr =
      isIP(e.address) === 6
        ? `${protocol}6 [${e.address}]:${port}`
        : `${protocol}4 ${e.address}:${port}`
    if (e.code === 'ETIMEDOUT') return `dial ${addr}: i/o timeout`
    return `dial ${addr}: connect: ${ERRNO_TEXT[e.code] ?? e.code.toLowerCase()}`
  }
  const v4 = errors.find((e) => e.address === '127.0.0.1')
  const v6 = errors.find((e) => e.address === '::1')
  const pods = errors.filter((e) => e !== v4 && e !== v6)
  const code: AppErrorCode = errors.some((e) => e.code === 'ETIMEDOUT')
    ? 'PFG_ERR_AGENT_CONNECT_TIMEOUT'
    : errors.some((e) => e.code === 'ECONNREFUSED')
      ? 'PFG_ERR_AGENT_CONNECT_REFUSED'
      : 'PFG_ERR_AGENT_CONNECT_FAILED'
  const podText = pods.length > 0 ? `, pod IPs: ${pods.map(text).join(', ')}` : ''
  return appError(
    code,
    `failed to connect to localhost:${port}${protocol === 'udp' ? '/udp' : ''} inside namespace "${path}", IPv4: ${text(v4)} IPv6 ${text(v6)}${podText}`,
  )
}
