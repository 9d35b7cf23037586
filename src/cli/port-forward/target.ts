/**
 * `pfgate port-forward` step 2, the target: the pod from the gateway's Kubernetes API
 * facade — its node (for the stream path), its phase, its named container ports.
 *
 * @module
 */
import { podPath } from '../../protocol/constants.js'
import type { PortSpec } from '../../protocol/port-spec.js'
import { appError, describeError } from '../../shared/errors.js'
import type { GatewayClient } from '../gateway-client.js'
import { GatewayHttpError } from '../gateway-client.js'

/** The parts of a Pod the CLI reads. */
export interface PodDoc {
  kind?: string
  metadata?: { name?: string; namespace?: string }
  spec?: {
    nodeName?: string
    containers?: { ports?: { name?: string; containerPort: number; protocol?: string }[] }[]
  }
  status?: { phase?: string }
}

/** A failure to report as these stderr lines, exit code 1. */
export class TargetError extends Error {
  constructor(line: string) {
    super(line)
    this.name = 'TargetError'
  }
}

/** Resolves a remote port spec against the pod's container ports (named ports). */
function resolveRemotePort(spec: PortSpec, pod: PodDoc, podName: string): number {
  const ports = (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? [])
  if (typeof spec.remote === 'number') {
    const declared = ports.filter((p) => p.containerPort === spec.remote)
    if (declared.length > 0 && declared.every((p) => (p.protocol ?? 'TCP') === 'UDP')) {
      throw appError('PFG_ERR_CLI_USAGE', `UDP protocol is not supported for ${spec.remote}`)
    }
    return spec.remote
  }
  const named = ports.find((p) => p.name === spec.remote)
  if (named === undefined) {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `Pod '${podName}' does not have a named port '${spec.remote}'`,
    )
  }
  return named.containerPort
}

/** The pod, as the gateway shows it to this user. */
export function fetchPod(client: GatewayClient, namespace: string, name: string): Promise<PodDoc> {
  return client.getJson<PodDoc>(podPath(namespace, name))
}

/** A forwardable pod: its node and the remote port of each spec. Rejects with {@link TargetError}. */
export async function resolvePodTarget(
  client: GatewayClient,
  namespace: string,
  name: string,
  specs: PortSpec[],
): Promise<{ nodeName: string; remotePorts: number[] }> {
  let pod: PodDoc
  try {
    pod = await fetchPod(client, namespace, name)
  } catch (e) {
    if (e instanceof GatewayHttpError) {
      if (e.status === 401)
        throw new TargetError('error: You must be logged in to the server (Unauthorized)')
      throw new TargetError(`Error from server (${e.kubeStatus?.reason ?? e.status}): ${e.message}`)
    }
    throw new TargetError(`error: ${describeError(e)}`)
  }
  if (pod.status?.phase !== undefined && pod.status.phase !== 'Running') {
    throw new TargetError(
      `error: unable to forward port because pod is not running. Current status=${pod.status.phase}`,
    )
  }
  try {
    return {
      nodeName: pod.spec?.nodeName ?? '',
      remotePorts: specs.map((s) => resolveRemotePort(s, pod, name)),
    }
  } catch (e) {
    throw new TargetError(`error: ${(e as Error).message}`)
  }
}
