/**
 * Builds the audit log the config describes.
 *
 * @module
 */
import type { Logger } from '../shared/log.js'
import type { GatewayConfig } from './config.js'
import type { AuditPort } from './forwarder.js'
import type { GatewayMetrics } from './metrics.js'

/** An audit port that can be closed. */
export interface ClosableAudit extends AuditPort {
  close(): Promise<void>
}

/** Creates the audit log for `config.audit`. */
export function createAuditLog(
  _config: GatewayConfig,
  deps: { logger: Logger; gatewayId: string; metrics: GatewayMetrics },
): Promise<ClosableAudit> {
  deps.logger.warn('audit trail not wired yet in this build: records are discarded')
  return Promise.resolve({
    mode: 'batch',
    append: () => Promise.resolve(),
    healthy: () => true,
    close: () => Promise.resolve(),
  })
}
