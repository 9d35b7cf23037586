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

/** A human name for an RST code (for logs and CLI messages). */
export function resetCodeName(code: number): string {
  for (const [name, value] of Object.entries(RST)) if (value === code) return name
  return `0x${code.toString(16)}`
}
