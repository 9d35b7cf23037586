/**
 * HTTP/2 RST_STREAM codes pfgate uses after a stream has answered 200
 * (RFC 9113 §7), and what each one means. docs/protocol.md has the same table.
 *
 * @module
 */

/** RFC 9113 §7 error codes used by pfgate. */
export const RST = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
} as const

/** Why a stream ended, as recorded in the audit trail (`endedBy`). */
export type EndedBy = 'client' | 'pod' | 'gateway' | 'admin' | 'limit' | 'error' | 'gateway-restart'

/**
 * The table: which RST code the gateway sends to the client (and the agent to the
 * gateway) for each cause of an abnormal end after 200.
 */
export const RESET_TABLE: readonly { cause: string; code: number; endedBy: EndedBy }[] = [
  { cause: 'the pod connection was reset or failed', code: RST.CONNECT_ERROR, endedBy: 'pod' },
  { cause: 'the agent session or the agent was lost', code: RST.INTERNAL_ERROR, endedBy: 'error' },
  { cause: 'the peer reset its side (propagated)', code: RST.CANCEL, endedBy: 'client' },
  { cause: 'an admin ended the stream or session', code: RST.CANCEL, endedBy: 'admin' },
  { cause: 'the gateway drain deadline passed', code: RST.CANCEL, endedBy: 'gateway' },
  {
    cause: 'a limit ended the stream (idle, lifetime)',
    code: RST.ENHANCE_YOUR_CALM,
    endedBy: 'limit',
  },
]

/** A human name for an RST code (for logs and CLI messages). */
export function resetCodeName(code: number): string {
  for (const [name, value] of Object.entries(RST)) if (value === code) return name
  return `0x${code.toString(16)}`
}
