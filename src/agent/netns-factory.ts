/**
 * Builds the network-namespace dialer from the agent config (kept apart so the
 * static path never loads it, nor gRPC): the resolver the config asks for (the
 * container runtime over CRI, or the config's own pod UID → namespace map) behind
 * the per-namespace helpers.
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { AgentConfig } from './config.js'
import { CriNetnsResolver } from './cri-resolver.js'
import { NetnsDialer } from './netns-dialer.js'
import { StaticNetnsResolver } from './netns-resolver.js'
import type { PodNetnsResolver } from './netns-resolver.js'
import type { PodDialer } from './pod-dialer.js'

/** The resolver `config.dialer.namespaces` asks for. */
export function createNetnsResolver(config: AgentConfig, log: Logger): PodNetnsResolver {
  if (config.dialer.namespaces === 'config') {
    return new StaticNetnsResolver(
      config.pods.flatMap((p) =>
        p.netns !== undefined && p.uid !== undefined
          ? [{ namespace: p.namespace, name: p.name, uid: p.uid, netns: p.netns }]
          : [],
      ),
    )
  }
  return new CriNetnsResolver({
    ...(config.runtime.endpoint !== undefined ? { endpoint: config.runtime.endpoint } : {}),
    timeoutMs: config.runtime.timeoutMs,
    log,
  })
}

/** Creates the netns dialer for the config. */
export function createNetnsDialerFromConfig(config: AgentConfig, log: Logger): Promise<PodDialer> {
  if (process.platform !== 'linux') {
    return Promise.reject(appError('PFG_ERR_CONFIG_INVALID', 'dialer.type "netns" needs Linux'))
  }
  return Promise.resolve().then(
    () =>
      new NetnsDialer({
        resolver: createNetnsResolver(config, log),
        idleTimeoutMs: config.dialer.helperIdleMs,
        log,
      }),
  )
}
