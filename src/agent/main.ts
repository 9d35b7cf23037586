/**
 * `pfgate agent --config FILE`: loads the config, starts the node agent, and
 * drains on SIGTERM/SIGINT.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { setDefaultHighWaterMark } from 'node:stream'
import { createLogger } from '../shared/log.js'
import { drainOnSignals } from '../shared/stop-signals.js'
import type { Logger } from '../shared/log.js'
import { STREAM_HIGH_WATER_MARK } from '../protocol/h2-settings.js'
import { loadAgentConfig } from './config.js'
import { createAgentServer } from './app.js'
import { StaticDialer } from './static-dialer.js'
import { ReverseConnector } from './reverse-connector.js'
import type { PodDialer } from './pod-dialer.js'
import type { AgentConfig } from './config.js'

/** Creates the dialer the config asks for. */
async function createDialer(config: AgentConfig, logger: Logger): Promise<PodDialer> {
  if (config.dialer.type === 'netns') {
    const { createNetnsDialerFromConfig } = await import('./netns-factory.js')
    return createNetnsDialerFromConfig(config, logger)
  }
  return new StaticDialer(config.pods)
}

/** Entry point; returns when the agent has stopped. */
export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      port: { type: 'string' },
      'node-name': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help === true || values.config === undefined) {
    process.stderr.write('usage: pfgate agent --config FILE [--port N] [--node-name NAME]\n')
    return values.help === true ? 0 : 2
  }
  const config = loadAgentConfig(
    values.config,
    values['node-name'] !== undefined ? { nodeName: values['node-name'] } : {},
  )
  setDefaultHighWaterMark(false, STREAM_HIGH_WATER_MARK)
  const logger = createLogger({ level: config.logLevel, name: `agent:${config.nodeName}` })
  const dialer = await createDialer(config, logger)
  const tls = {
    cert: readFileSync(config.tls.cert),
    key: readFileSync(config.tls.key),
    clientCa: readFileSync(config.tls.clientCa),
  }
  const agent = createAgentServer({
    nodeName: config.nodeName,
    tls,
    allowedClients: config.allowedClients,
    dialer,
    connectTimeoutMs: config.dialer.connectTimeoutMs,
    logger,
  })
  let port = 0
  if (config.listen !== null) {
    const want = values.port !== undefined ? Number(values.port) : config.listen.port
    const addr = await agent.listen(want, config.listen.host)
    port = addr.port
    logger.info({ node: config.nodeName, ...addr, dialer: config.dialer.type }, 'agent listening')
  }
  let reverse: ReverseConnector | undefined
  if (config.reverse !== null) {
    reverse = new ReverseConnector({
      agent,
      config: config.reverse,
      tls: { cert: tls.cert, key: tls.key, ca: tls.clientCa },
      allowedServers: config.allowedClients,
      logger,
    })
    reverse.start()
    logger.info(
      { node: config.nodeName, gateway: `${config.reverse.host}:${config.reverse.port}` },
      'agent dialing the gateway (reverse mode)',
    )
  }
  // A parent that supervises us (pfgate dev) reads this line to learn the port (0: none).
  if (process.send !== undefined) process.send({ type: 'listening', port })
  // The supervisor's IPC channel must not keep this process alive after a shutdown.
  process.channel?.unref()
  await drainOnSignals('agent', logger, async () => {
    await reverse?.close()
    await agent.close(config.shutdownGraceMs)
  })
  logger.info('agent stopped')
  logger.flush()
  return 0
}
