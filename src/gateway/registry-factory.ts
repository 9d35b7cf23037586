/**
 * Builds the Kubernetes registry source (loaded only when configured).
 *
 * @module
 */
import type { Logger } from '../shared/log.js'
import { createKubeRegistry } from './registry/kube/registry.js'
import type { KubeRegistrySettings } from './registry/kube/config.js'
import type { PodRegistry } from './registry/types.js'

/** Creates the Kubernetes list+watch registry. */
export function createKubeRegistryFromConfig(
  settings: KubeRegistrySettings,
  logger: Logger,
): Promise<PodRegistry> {
  return Promise.resolve(createKubeRegistry(settings, { env: process.env, logger }))
}
