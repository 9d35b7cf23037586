/**
 * PING liveness for long-lived connections (HTTP/2 sessions, SPDY sessions, WebSockets):
 * a peer whose link went down sends no FIN and no RST, and TCP may take many minutes to
 * notice (retransmissions while bytes are in flight; keepalive only on idle sockets). A
 * PING that gets no answer in time is the only prompt sign.
 *
 * @module
 */

/** A connection that can PING its peer: `cb` once the answer came (err null) or never will. */
export interface Pingable {
  ping(cb: (err: Error | null) => void): unknown
}

/**
 * PINGs `target` every `everyMs`; when a PING is not answered within `everyMs` (or fails),
 * `onDead` is called once with the reason and the PINGs stop. `everyMs` 0 disables.
 * Returns the function that stops the PINGs (call it when the connection closes).
 */
export function keepAlive(
  target: Pingable,
  everyMs: number,
  onDead: (why: string) => void,
): () => void {
  if (everyMs <= 0) return () => undefined
  let stopped = false
  let watchdog: NodeJS.Timeout | undefined
  const stop = (): void => {
    stopped = true
    clearInterval(timer)
    clearTimeout(watchdog)
  }
  const dead = (why: string): void => {
    if (stopped) return
    stop()
    onDead(why)
  }
  const timer = setInterval(() => {
    // One PING in flight at a time: an unanswered one is judged by its own watchdog.
    if (watchdog !== undefined) return
    watchdog = setTimeout(() => dead(`no answer to a PING within ${everyMs} ms`), everyMs)
    watchdog.unref()
    try {
      target.ping((err) => {
        clearTimeout(watchdog)
        watchdog = undefined
        if (err !== null) dead(`PING failed: ${err.message}`)
      })
    } catch (err) {
      dead(`PING failed: ${err instanceof Error ? err.message : String(err)}`)
    }
  }, everyMs)
  timer.unref()
  return stop
}
