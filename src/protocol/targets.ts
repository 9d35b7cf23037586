/**
 * Forward targets as `kubectl port-forward` names them (`TYPE/NAME`): a pod, a service
 * or a workload (deployment, replica set, stateful set). The CLI parses them; the native
 * protocol carries them in the path (docs/protocol.md, "Services and workloads"); the
 * gateway resolves a service or workload to one ready pod per forwarded connection.
 *
 * @module
 */
import { appError } from '../shared/errors.js'

/** What a forward names. */
export type TargetKind = 'pod' | 'service' | 'deployment' | 'replicaset' | 'statefulset'

/** Every `TYPE` kubectl accepts before the slash, with the kind it means. */
export const TARGET_TYPES: Readonly<Record<string, TargetKind>> = {
  po: 'pod',
  pod: 'pod',
  pods: 'pod',
  svc: 'service',
  service: 'service',
  services: 'service',
  deploy: 'deployment',
  deployment: 'deployment',
  deployments: 'deployment',
  rs: 'replicaset',
  replicaset: 'replicaset',
  replicasets: 'replicaset',
  sts: 'statefulset',
  statefulset: 'statefulset',
  statefulsets: 'statefulset',
}

/** Each kind's API resource (plural), as in Kubernetes paths and in the native path. */
export const TARGET_RESOURCES: Readonly<Record<TargetKind, string>> = {
  pod: 'pods',
  service: 'services',
  deployment: 'deployments',
  replicaset: 'replicasets',
  statefulset: 'statefulsets',
}

/** Each kind's short name, used where a target is shown (`svc/echo:5000` in audit records). */
export const TARGET_SHORT_NAMES: Readonly<Record<TargetKind, string>> = {
  pod: 'pod',
  service: 'svc',
  deployment: 'deploy',
  replicaset: 'rs',
  statefulset: 'sts',
}

/** The apps/v1 kind of a workload target. */
export const WORKLOAD_KINDS = {
  deployment: 'Deployment',
  replicaset: 'ReplicaSet',
  statefulset: 'StatefulSet',
} as const

/** A parsed `TYPE/NAME` (or a bare pod name). */
export interface TargetRef {
  kind: TargetKind
  name: string
}

/**
 * Parses `NAME` (a pod) or `TYPE/NAME` as kubectl does; an unknown type is
 * `PFG_ERR_CLI_USAGE` with kubectl's message. The name itself is checked by the caller.
 */
export function parseTargetRef(arg: string): TargetRef {
  const slash = arg.indexOf('/')
  if (slash < 0) return { kind: 'pod', name: arg }
  const type = arg.slice(0, slash).toLowerCase()
  const kind = TARGET_TYPES[type]
  if (kind === undefined) {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `the server doesn't have a resource type ${JSON.stringify(arg.slice(0, slash))}`,
    )
  }
  return { kind, name: arg.slice(slash + 1) }
}

/** The kind for a resource plural in a path (`services` → `service`), or undefined. */
export function kindOfResource(resource: string): TargetKind | undefined {
  for (const [kind, r] of Object.entries(TARGET_RESOURCES))
    if (r === resource) return kind as TargetKind
  return undefined
}

/** `svc/echo:5000` — how a target and the port asked for are shown (audit `target`). */
export function describeTarget(kind: TargetKind, name: string, port: number | string): string {
  return `${TARGET_SHORT_NAMES[kind]}/${name}:${port}`
}

/**
 * Client-facing native path for any target, resolved by the gateway per stream:
 * `/proxy/namespaces/{ns}/{resource}/{name}/portForward`.
 */
export function nativeTargetPath(namespace: string, kind: TargetKind, name: string): string {
  return `/proxy/namespaces/${encodeURIComponent(namespace)}/${TARGET_RESOURCES[kind]}/${encodeURIComponent(name)}/portForward`
}

/** A port name (IANA service name syntax, as Kubernetes checks it: ≤ 15, a letter, no `--`). */
export function isPortName(value: string): boolean {
  return (
    value.length >= 1 &&
    value.length <= 15 &&
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(value) &&
    /[a-z]/.test(value) &&
    !value.includes('--')
  )
}
