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
import { TARGET_RESOURCES } from '../../protocol/targets.js'
import type { TargetRef } from '../../protocol/targets.js'

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

/**
 * Resolves a remote port spec against the pod's container ports (named ports), with its
 * protocol (docs/udp.md): a TCP forward to a port the pod declares UDP only is refused (as
 * kubectl does), and a UDP forward to a port it declares TCP only; a port the pod does not
 * declare is allowed either way. A named port must be declared with the spec's protocol.
 */
export function resolveRemotePort(spec: PortSpec, pod: PodDoc, podName: string): number {
  const ports = (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? [])
  const want = spec.protocol === 'udp' ? 'UDP' : 'TCP'
  if (typeof spec.remote === 'number') {
    const declared = ports.filter((p) => p.containerPort === spec.remote)
    if (declared.length > 0 && declared.every((p) => (p.protocol ?? 'TCP') !== want)) {
      throw appError(
        'PFG_ERR_CLI_USAGE',
        want === 'TCP'
          ? `UDP protocol is not supported for ${spec.remote}`
          : `Pod '${podName}' declares port ${spec.remote} as ${declared[0]?.protocol ?? 'TCP'} only, not UDP`,
      )
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
  if ((named.protocol ?? 'TCP') !== want) {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `Pod '${podName}' declares its port '${spec.remote}' as ${named.protocol ?? 'TCP'}, not ${want}`,
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
  podRunningTimeoutMs = 60_000,
): Promise<{ nodeName: string; remotePorts: number[] }> {
  let pod: PodDoc
  try {
    pod = await fetchPod(client, namespace, name)
  } catch (e) {
    throw fromServer(e)
  }
  // --pod-running-timeout: a Pending pod is waited for (kubectl's default: 1 minute).
  const waitUntil = Date.now() + podRunningTimeoutMs
  while (pod.status?.phase === 'Pending' && Date.now() < waitUntil) {
    await new Promise((r) => setTimeout(r, Math.min(500, Math.max(0, waitUntil - Date.now()))))
    try {
      pod = await fetchPod(client, namespace, name)
    } catch (e) {
      throw fromServer(e)
    }
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

/** A refusal from the gateway, as kubectl words it (the gateway's `(ref …)` included). */
function fromServer(e: unknown): TargetError {
  if (e instanceof GatewayHttpError) {
    // The message carries the gateway's ref (`Unauthorized (ref …)`), as kubectl shows it.
    if (e.status === 401)
      return new TargetError(`error: You must be logged in to the server (${e.message})`)
    return new TargetError(`Error from server (${e.kubeStatus?.reason ?? e.status}): ${e.message}`)
  }
  return new TargetError(`error: ${describeError(e)}`)
}

/** A Service or apps/v1 workload as the gateway serves it (what the CLI reads of it). */
interface TargetDoc {
  spec?: { ports?: { name?: string; port: number }[] }
}

/** The API path of a service or workload object. */
function targetObjectPath(namespace: string, ref: TargetRef): string {
  const ns = encodeURIComponent(namespace)
  const name = encodeURIComponent(ref.name)
  return ref.kind === 'service'
    ? `/api/v1/namespaces/${ns}/services/${name}`
    : `/apis/apps/v1/namespaces/${ns}/${TARGET_RESOURCES[ref.kind]}/${name}`
}

/**
 * The remote port to ask the gateway for: for a service, one of its ports (by number or
 * name, kubectl's error otherwise; the gateway maps it to each picked pod's target port);
 * for a workload, the container port as given (a name is resolved on each picked pod).
 */
export function targetRemotePort(spec: PortSpec, doc: TargetDoc, ref: TargetRef): number | string {
  if (ref.kind !== 'service') return spec.remote
  const ports = doc.spec?.ports ?? []
  const sp = ports.find((p) => (typeof spec.remote === 'number' ? p.port : p.name) === spec.remote)
  if (sp === undefined) {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      typeof spec.remote === 'number'
        ? `Service ${ref.name} does not have a service port ${spec.remote}`
        : `Service ${ref.name} does not have a named port '${spec.remote}'`,
    )
  }
  return sp.port
}

/**
 * A service or workload: its object is read (it exists, the user may use it, a service's
 * ports); the pod is picked by the gateway for every connection.
 */
export async function resolveNamedTarget(
  client: GatewayClient,
  namespace: string,
  ref: TargetRef,
  specs: PortSpec[],
): Promise<{ remotePorts: (number | string)[] }> {
  let doc: TargetDoc
  try {
    doc = await client.getJson<TargetDoc>(targetObjectPath(namespace, ref))
  } catch (e) {
    throw fromServer(e)
  }
  try {
    return { remotePorts: specs.map((s) => targetRemotePort(s, doc, ref)) }
  } catch (e) {
    throw new TargetError(`error: ${(e as Error).message}`)
  }
}
