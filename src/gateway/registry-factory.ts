/**
 * Builds the Kubernetes registry source (loaded only when configured).
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { KubeRegistrySourceConfig } from './config.js'
import type { PodRegistry } from './registry/types.js'

/** Creates the Kubernetes list+watch registry. */
export function createKubeRegistryFromConfig(
  _config: KubeRegistrySourceConfig,
  _logger: Logger,
): Promise<PodRegistry> {
  return Promise.reject(
    appError(
      'PFG_ERR_CONFIG_INVALID',
      'registry.source "kubernetes" is not available in this build',
    ),
  )
}
