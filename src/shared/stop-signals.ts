/**
 * How the gateway and the agent stop: the first SIGTERM/SIGINT (or the supervisor's IPC
 * channel closing) starts a bounded drain; the handlers stay until the process ends, so a
 * second signal is logged and ignored instead of killing the process mid-drain the default
 * way (Ctrl-C of `npm start` delivers SIGINT from the terminal, then SIGTERM from the dev
 * supervisor).
 *
 * @module
 */
import { describeError } from './errors.js'
import type { Logger } from './log.js'

/**
 * Waits for a stop signal, runs `drain` once (it must be bounded), and resolves when it has
 * finished (or failed: logged). `what` names the process in the log lines.
 */
export function drainOnSignals(
  what: string,
  logger: Logger,
  drain: () => Promise<unknown>,
): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopping = false
    const stop = (signal: string): void => {
      if (stopping) {
        logger.info({ signal }, `${what} already stopping: signal ignored`)
        return
      }
      stopping = true
      logger.info({ signal }, `${what} stopping: draining streams`)
      drain().then(
        () => resolve(),
        (err: unknown) => {
          logger.error({ err: describeError(err) }, 'shutdown error')
          resolve()
        },
      )
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
    process.on('disconnect', () => stop('disconnect'))
  })
}
