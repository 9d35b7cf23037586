/**
 * Builds the network-namespace dialer from the agent config (kept apart so the
 * static path never loads it).
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import type { AgentConfig } from './config.js'
import type { PodDialer } from './pod-dialer.js'

/** Creates the netns dialer for `config.pods`. */
export function createNetnsDialerFromConfig(_config: AgentConfig): Promise<PodDialer> {
  return Promise.reject(
    appError('PFG_ERR_CONFIG_INVALID', 'dialer.type "netns" is not available in this build'),
  )
}
