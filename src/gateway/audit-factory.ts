/**
 * Builds the audit log the config describes — sinks, mode, metrics — and runs crash
 * recovery before the gateway accepts a stream: every stream and session left open
 * by a killed gateway gets its close record (ended by `gateway-restart`).
 *
 * A file sink is two files: the main trail and the denials trail beside it
 * (`deniedTrailPath`), each with its own size and retention, so that refusals — which
 * anyone can cause — rotate only refusals away. Refusals also pass the flood budget
 * (audit/denial-limiter.ts) before they are written; what it holds back is summarized
 * every `audit.denials.summaryInterval`, and at close, before `gateway.stopped`.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { Counter, Gauge } from 'prom-client'
import { AUDIT_SCHEMA, deniedTrailPath, isDenialType } from '../protocol/audit-record.js'
import type { AuditRecord } from '../protocol/audit-record.js'
import { describeError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { AuditLog } from './audit/audit-log.js'
import { DenialLimiter } from './audit/denial-limiter.js'
import { FileSink } from './audit/file-sink.js'
import { newAuditId, auditTime } from './audit/record.js'
import { recoverDanglingRecords } from './audit/recovery.js'
import { StreamSink } from './audit/stream-sink.js'
import type { AuditSink } from './audit/types.js'
import { WebhookSink } from './audit/webhook-sink.js'
import type { GatewayConfig } from './config.js'
import type { AuditPort } from './forward/forwarder.js'
import type { GatewayMetrics } from './metrics.js'

/** An audit port that can be closed (writes `gateway.stopped` first). */
export interface ClosableAudit extends AuditPort {
  close(): Promise<void>
  /** The underlying log (metrics, tests). */
  readonly log: AuditLog
  /** The flood budget for refusals (tests). */
  readonly limiter: DenialLimiter
}

async function openSinks(config: GatewayConfig, logger: Logger): Promise<AuditSink[]> {
  const sinks: AuditSink[] = []
  try {
    for (const [i, s] of config.audit.sinks.entries()) {
      const name = `${s.type}${config.audit.sinks.length > 1 ? `-${i}` : ''}`
      switch (s.type) {
        case 'file':
          sinks.push(
            await FileSink.open({
              path: s.path,
              fsync: s.fsync,
              fsyncIntervalMs: s.fsyncIntervalMs,
              maxBytes: s.maxSizeBytes,
              retention: s.maxFiles,
              name,
              accepts: (r) => !isDenialType(r.type),
              logger,
            }),
          )
          sinks.push(
            await FileSink.open({
              path: deniedTrailPath(s.path),
              fsync: s.fsync,
              fsyncIntervalMs: s.fsyncIntervalMs,
              maxBytes: s.denialsMaxSizeBytes,
              retention: s.denialsMaxFiles,
              name: `${name}-denials`,
              accepts: (r) => isDenialType(r.type),
              logger,
            }),
          )
          break
        case 'stdout':
          sinks.push(new StreamSink({ stream: process.stdout, name }))
          break
        case 'webhook':
          sinks.push(
            await WebhookSink.open({
              url: s.url,
              ...(s.tokenFile !== undefined
                ? { bearerToken: readFileSync(s.tokenFile, 'utf8').trim() }
                : {}),
              ...(s.caFile !== undefined ? { ca: readFileSync(s.caFile) } : {}),
              timeoutMs: s.timeoutMs,
              spoolDir: s.spoolDir,
              maxSpoolBytes: s.maxSpoolBytes,
              maxBatchRecords: s.batchSize,
              name,
              logger,
            }),
          )
          break
      }
    }
  } catch (err) {
    await Promise.allSettled(sinks.map((s) => s.close()))
    throw err
  }
  return sinks
}

function lifecycleRecord(
  type: 'gateway.started' | 'gateway.stopped',
  gatewayId: string,
): AuditRecord {
  return { schema: AUDIT_SCHEMA, id: newAuditId(), time: auditTime(), type, gateway: gatewayId }
}

/** Opens the sinks, recovers dangling records from file trails, and returns the audit port. */
export async function createAuditLog(
  config: GatewayConfig,
  deps: { logger: Logger; gatewayId: string; metrics: GatewayMetrics },
): Promise<ClosableAudit> {
  const { logger, gatewayId, metrics } = deps
  const sinks = await openSinks(config, logger)
  const log = new AuditLog({
    sinks,
    mode: config.audit.mode,
    lingerMs: config.audit.lingerMs,
    logger,
    onHealthChange: (healthy) => {
      if (healthy) logger.info('audit sinks healthy again: accepting new streams')
      else logger.error('audit sink failing: new streams are refused (fail closed)')
    },
  })
  metrics.setSources({ auditQueueDepth: () => log.metrics().queueDepth })
  new Gauge({
    name: 'pfgate_audit_healthy',
    help: '1 when every audit sink can write',
    registers: [metrics.registry],
    collect() {
      this.set(log.healthy() ? 1 : 0)
    },
  })
  new Gauge({
    name: 'pfgate_audit_sink_failures',
    help: 'Failed write attempts per audit sink since start',
    labelNames: ['sink'],
    registers: [metrics.registry],
    collect() {
      for (const s of log.metrics().sinks) this.set({ sink: s.name }, s.failures)
    },
  })

  // Crash recovery: close what a previous instance left open, before anything else is written.
  for (const s of config.audit.sinks) {
    if (s.type !== 'file') continue
    try {
      const dangling = await recoverDanglingRecords(s.path)
      for (const rec of dangling) await log.append(rec)
      if (dangling.length > 0) {
        logger.warn(
          { file: s.path, records: dangling.length },
          'audit recovery: closed streams/sessions left open by a previous gateway',
        )
      }
    } catch (err) {
      logger.error({ file: s.path, err: describeError(err) }, 'audit recovery failed')
      throw err
    }
  }
  await log.append(lifecycleRecord('gateway.started', gatewayId))

  // The flood budget for refusals.
  const limiter = new DenialLimiter(config.audit.denials)
  const suppressed = new Counter({
    name: 'pfgate_audit_denials_suppressed_total',
    help: 'Refusals counted in a denials.suppressed summary instead of recorded one by one',
    registers: [metrics.registry],
  })
  const appendLogged = (record: AuditRecord): void => {
    log.append(record).catch((err: unknown) => {
      metrics.auditFailures.inc({ sink: 'all' })
      logger.error({ err: describeError(err), type: record.type }, 'audit write failed')
    })
  }
  const summarize = (): void => {
    for (const rec of limiter.summaries(gatewayId)) {
      logger.warn(
        {
          source: rec.sourceAddress ?? 'other sources',
          count: rec.count,
          reasons: rec.reasons,
          firstTime: rec.firstTime,
          lastTime: rec.lastTime,
        },
        'refusals over the flood budget were counted, not recorded one by one',
      )
      appendLogged(rec)
    }
  }
  const timer = setInterval(summarize, config.audit.denials.summaryIntervalMs)
  timer.unref()

  return {
    mode: config.audit.mode,
    log,
    limiter,
    append: (record) => log.append(record),
    appendDenial(record) {
      if (!limiter.admit(record)) {
        suppressed.inc()
        return false
      }
      appendLogged(record)
      return true
    },
    healthy: () => log.healthy(),
    async close() {
      clearInterval(timer)
      summarize()
      await log.append(lifecycleRecord('gateway.stopped', gatewayId)).catch(() => undefined)
      await log.close()
    },
  }
}
