/**
 * `pfgate gateway --config FILE`: loads and validates the config, builds every
 * part, listens, and shuts down gracefully on SIGTERM/SIGINT.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { setDefaultHighWaterMark } from 'node:stream'
import { parseArgs } from 'node:util'
import { drainOnSignals } from '../shared/stop-signals.js'
import { STREAM_HIGH_WATER_MARK } from '../protocol/h2-settings.js'
import { describeError } from '../shared/errors.js'
import { createLogger } from '../shared/log.js'
import type { Logger } from '../shared/log.js'
import { buildGateway } from './app.js'
import { Authenticator } from './auth/authenticator.js'
import { Authorizer } from './authz/authorizer.js'
import { clientCaOf, createIdentitySources, createRbac } from './auth/identity-config.js'
import { loadGatewayConfig } from './config.js'
import type { GatewayConfig } from './config.js'
import { Forwarder, newGatewayId } from './forward/forwarder.js'
import { createAuditLog } from './audit-factory.js'
import { GatewayMetrics } from './metrics.js'
import { BufferBudget } from './buffer-budget.js'
import { AgentPool } from './relay/agent-pool.js'
import { ReverseAgents } from './relay/reverse-agents.js'
import { Peers } from './peers.js'
import { createKubeRegistry } from './registry/kube/registry.js'
import { StaticRegistry } from './registry/static-registry.js'
import type { PodRegistry } from './registry/types.js'

/** Creates the registry the config names. */
function createRegistry(config: GatewayConfig, logger: Logger): PodRegistry {
  const r = config.registry
  if (r.source === 'static') return new StaticRegistry({ file: r.file, logger })
  return createKubeRegistry(r, { env: process.env, logger })
}

/** A started gateway (for main and for tests that run it in-process). */
export interface RunningGateway {
  port: number
  metricsPort?: number
  /** The agent endpoint's port (reverse mode). */
  agentPort?: number
  gatewayId: string
  stop(): Promise<void>
}

/** Builds and starts a gateway from a loaded config. */
export async function startGateway(
  config: GatewayConfig,
  logger: Logger,
  overrides: { port?: number } = {},
): Promise<RunningGateway> {
  const gatewayId = newGatewayId()
  const metrics = new GatewayMetrics()
  const registry = createRegistry(config, logger)
  const sources = config.auth.sources ?? { oidc: [] }
  const authenticator = new Authenticator(
    config.auth,
    logger,
    Date.now,
    createIdentitySources(sources, config.auth, logger, process.env),
  )
  const rbac = createRbac(config.authorization, process.env)
  const authorizer = new Authorizer(config.authorization, rbac)
  const clientCa = clientCaOf(sources)
  logger.info(
    { sources: authenticator.sources, authorization: rbac !== undefined ? 'rbac' : 'rules' },
    'identity sources',
  )
  const agentTls = {
    ca: readFileSync(config.agents.ca),
    cert: readFileSync(config.agents.cert),
    key: readFileSync(config.agents.key),
  }
  const budget = new BufferBudget({ budgetBytes: config.limits.bufferBudgetBytes, metrics, logger })
  const rc = config.agents.reverse
  const reverse =
    rc === null
      ? undefined
      : new ReverseAgents({
          replicaId: gatewayId,
          replicas: rc.replicas,
          tls: { ca: agentTls.ca, cert: readFileSync(rc.cert), key: readFileSync(rc.key) },
          keepaliveMs: config.agents.keepaliveMs,
          handshakeTimeoutMs: rc.handshakeTimeoutMs,
          logger,
          onSession: (s) => budget.register(s),
        })
  const agents = new AgentPool({
    ...agentTls,
    connectTimeoutMs: config.agents.connectTimeoutMs,
    keepaliveMs: config.agents.keepaliveMs,
    logger,
    onSession: (s) => budget.register(s),
    ...(reverse !== undefined ? { reverse, reverseOnly: config.agents.mode === 'reverse' } : {}),
  })
  const audit = await createAuditLog(config, { logger, gatewayId, metrics })
  const forwarder = new Forwarder({
    registry,
    authenticator,
    authorizer,
    agents,
    audit,
    limits: config.limits,
    metrics,
    logger,
    gatewayId,
    budget,
  })
  registry.on('ready', (ready) => logger.info({ ready }, 'registry readiness changed'))
  const started = registry.start()
  if (config.registry.source === 'static') {
    // A broken registry file is a configuration error: fail at start-up.
    await started
  } else {
    // A cluster registry syncs in the background; until then /readyz is false and
    // streams get 503 (PFG_ERR_ROUTE_NOT_READY).
    started.catch((err: unknown) =>
      logger.error({ err: describeError(err) }, 'kubernetes registry stopped before syncing'),
    )
  }
  const pc = config.peers
  const peers =
    pc === null
      ? undefined
      : new Peers({
          urls: pc.urls,
          ...(pc.dns !== undefined ? { dns: pc.dns } : {}),
          ca: pc.ca !== undefined ? readFileSync(pc.ca) : undefined,
          ...(pc.serverName !== undefined ? { serverName: pc.serverName } : {}),
          timeoutMs: pc.timeoutMs,
          logger,
        })
  const gateway = await buildGateway({
    cluster: {
      gatewayId,
      mode: config.agents.mode,
      peers,
      reverse,
      readyMinAgents: rc?.readyMinAgents ?? 0,
    },
    tls: {
      cert: readFileSync(config.tls.cert),
      key: readFileSync(config.tls.key),
      ...(clientCa !== undefined ? { clientCa } : {}),
    },
    logger,
    registry,
    authenticator,
    authorizer,
    agents,
    audit,
    metrics,
    forwarder,
    maxHeaderBytes: config.limits.maxHeaderBytes,
    limits: config.limits,
    budget,
    nodeProxy: { tls: agentTls, connectTimeoutMs: config.agents.connectTimeoutMs },
    kubernetes: config.kubernetes,
    console: { auditFile: config.audit.sinks.find((x) => x.type === 'file')?.path },
  })
  const addr = await gateway.listen(
    overrides.port ?? config.listen.port,
    config.listen.host,
    config.metrics,
  )
  const agentPort =
    reverse !== undefined && rc !== null ? (await reverse.listen(rc.port, rc.host)).port : undefined
  logger.info({ gatewayId, host: config.listen.host, ...addr, agentPort }, 'gateway listening')
  return {
    ...addr,
    ...(agentPort !== undefined ? { agentPort } : {}),
    gatewayId,
    async stop() {
      await gateway.close(config.shutdownGraceMs)
      await reverse?.close(true)
      await peers?.close()
      budget.close()
      await audit.close()
      await registry.close()
      authenticator.close()
    },
  }
}

/** `--config FILE [--port N]`. */
const OPTIONS = {
  config: { type: 'string', short: 'c' },
  port: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

/** Entry point. */
export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: OPTIONS })
  if (values.help === true || values.config === undefined) {
    process.stderr.write('usage: pfgate gateway --config FILE [--port N]\n')
    return values.help === true ? 0 : 2
  }
  const config = loadGatewayConfig(values.config)
  setDefaultHighWaterMark(false, STREAM_HIGH_WATER_MARK)
  const logger = createLogger({ level: config.logLevel, name: 'gateway' })
  const gw = await startGateway(
    config,
    logger,
    values.port !== undefined ? { port: Number(values.port) } : {},
  )
  if (process.send !== undefined) {
    process.send({
      type: 'listening',
      port: gw.port,
      metricsPort: gw.metricsPort,
      agentPort: gw.agentPort,
      gatewayId: gw.gatewayId,
    })
  }
  // The supervisor's IPC channel must not keep this process alive after a shutdown.
  process.channel?.unref()
  await drainOnSignals('gateway', logger, () => gw.stop())
  logger.info('gateway stopped')
  logger.flush()
  return 0
}
