/**
 * Builds the network-namespace dialer from the agent config (kept apart so the
 * static path never loads it).
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { AgentConfig } from './config.js'
import { NetnsDialer } from './netns-dialer.js'
import type { PodDialer } from './pod-dialer.js'

/** Creates the netns dialer for `config.pods` (each pod's `netns` handle). */
export function createNetnsDialerFromConfig(config: AgentConfig, log: Logger): Promise<PodDialer> {
  if (process.platform !== 'linux') {
    return Promise.reject(appError('PFG_ERR_CONFIG_INVALID', 'dialer.type "netns" needs Linux'))
  }
  const pods: [string, string][] = []
  for (const p of config.pods) {
    if (p.netns !== undefined) pods.push([`${p.namespace}/${p.name}`, p.netns])
  }
  return Promise.resolve(new NetnsDialer({ pods, idleTimeoutMs: config.dialer.helperIdleMs, log }))
}
