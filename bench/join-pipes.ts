/**
 * The relay of the minimal chains (bench/node-chain-hop.ts, bench/node-h2-chain-hop.ts): two
 * byte streams piped both ways with nothing of pfgate's.
 *
 * @module
 */
import type { Duplex } from 'node:stream'

/**
 * Pipes `a` and `b` both ways; an end is passed on as a half-close (pipe's `end()`), an
 * error or an abnormal close of one side destroys the other. A side that closes after both of
 * its directions ended leaves the other alone: it may still be flushing what it was given.
 */
export function join2(a: Duplex, b: Duplex): void {
  a.pipe(b)
  b.pipe(a)
  const kill = (): void => {
    a.destroy()
    b.destroy()
  }
  a.once('error', kill)
  b.once('error', kill)
  // A side that closed before both directions ended (a reset) takes the other with it.
  const onClose = (s: Duplex, other: Duplex) => (): void => {
    if (!(s.readableEnded && s.writableFinished)) other.destroy()
  }
  a.once('close', onClose(a, b))
  b.once('close', onClose(b, a))
}
