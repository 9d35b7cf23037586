/**
 * The watch wire format's framing: newline-delimited JSON events split across chunks.
 *
 * @module
 */

// ───────────────────────────── watch stream framing ─────────────────────────────

/**
 * Splits a byte stream into newline-terminated lines (the watch wire format:
 * one JSON event per line, split across chunks at arbitrary byte offsets).
 * Decodes only whole lines, so multi-byte UTF-8 characters split by a chunk
 * boundary survive. A line longer than `maxLineBytes` throws a RangeError.
 */
export class LineSplitter {
  readonly #max: number
  #parts: Buffer[] = []
  #size = 0

  constructor(maxLineBytes: number) {
    this.#max = maxLineBytes
  }

  /** Bytes of an unfinished line held back. */
  get pending(): number {
    return this.#size
  }

  /** Feeds a chunk; returns the lines it completed (without `\n` or `\r`; blank lines dropped). */
  push(chunk: Uint8Array): string[] {
    const buf = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)
    const lines: string[] = []
    let start = 0
    for (;;) {
      const nl = buf.indexOf(0x0a, start)
      if (nl === -1) break
      const piece = buf.subarray(start, nl)
      this.#check(piece.length)
      const whole = this.#size === 0 ? piece : Buffer.concat([...this.#parts, piece])
      this.#parts = []
      this.#size = 0
      const line = whole.toString('utf8').replace(/\r$/, '')
      if (line.trim() !== '') lines.push(line)
      start = nl + 1
    }
    if (start < buf.length) {
      const rest = buf.subarray(start)
      this.#check(rest.length)
      // Copy: holding a view would pin the whole chunk in memory.
      this.#parts.push(Buffer.from(rest))
      this.#size += rest.length
    }
    return lines
  }

  #check(extra: number): void {
    if (this.#size + extra > this.#max) {
      this.#parts = []
      this.#size = 0
      throw new RangeError(`watch event longer than ${this.#max} bytes`)
    }
  }
}
