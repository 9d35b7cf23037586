/**
 * Pods and nodes from Kubernetes objects: only the fields the gateway needs
 * (PodInfo/NodeInfo), never whole objects.
 *
 * @module
 */
import { isIP } from 'node:net'
import type { ContainerPort, NodeInfo, PodInfo } from '../types.js'

// ───────────────────────────── annotations ─────────────────────────────

/** Node annotation overriding the agent port for that node (a decimal 1..65535). */
export const NODE_AGENT_PORT_ANNOTATION = 'pfgate.io/agent-port'

// ───────────────────────────── object mapping ─────────────────────────────

export type Obj = Record<string, unknown>

export function rec(v: unknown): Obj | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined
}

function stringMap(v: unknown): Record<string, string> | undefined {
  const r = rec(v)
  if (r === undefined) return undefined
  const out: Record<string, string> = {}
  let any = false
  for (const [k, val] of Object.entries(r)) {
    if (typeof val === 'string') {
      out[k] = val
      any = true
    }
  }
  return any ? out : undefined
}

function containerPorts(containers: unknown, out: ContainerPort[], sidecarsOnly: boolean): void {
  if (!Array.isArray(containers)) return
  for (const c of containers) {
    const container = rec(c)
    if (container === undefined || !Array.isArray(container.ports)) continue
    // Init containers only run beside the app when they are native sidecars (restartPolicy Always).
    if (sidecarsOnly && container.restartPolicy !== 'Always') continue
    for (const p of container.ports) {
      const port = rec(p)
      const n = port?.containerPort
      if (port === undefined || typeof n !== 'number' || !Number.isInteger(n)) continue
      if (n < 1 || n > 65535) continue
      const proto = port.protocol === 'UDP' || port.protocol === 'SCTP' ? port.protocol : 'TCP'
      const name = str(port.name)
      out.push(
        name !== undefined && name !== ''
          ? { name, containerPort: n, protocol: proto }
          : {
              containerPort: n,
              protocol: proto,
            },
      )
    }
  }
}

/**
 * The fields the gateway needs from a Pod object (API JSON), or undefined when it
 * has no namespace/name. New objects only: nothing of the input is retained.
 */
export function podInfoFromObject(value: unknown): PodInfo | undefined {
  const obj = rec(value)
  const meta = rec(obj?.metadata)
  const namespace = str(meta?.namespace)
  const name = str(meta?.name)
  if (obj === undefined || meta === undefined || !namespace || !name) return undefined
  const spec = rec(obj.spec)
  const status = rec(obj.status)
  const ports: ContainerPort[] = []
  containerPorts(spec?.containers, ports, false)
  containerPorts(spec?.initContainers, ports, true)
  const pod: PodInfo = {
    namespace,
    name,
    uid: str(meta.uid) ?? '',
    nodeName: str(spec?.nodeName) ?? '',
    phase: str(status?.phase) ?? 'Unknown',
    ports,
  }
  const labels = stringMap(meta.labels)
  if (labels !== undefined) pod.labels = labels
  const created = str(meta.creationTimestamp)
  if (created !== undefined) pod.creationTimestamp = created
  const conditions = Array.isArray(status?.conditions) ? (status.conditions as unknown[]) : []
  const ready = conditions.map(rec).find((c) => str(c?.type) === 'Ready')
  if (ready !== undefined) pod.ready = str(ready.status) === 'True'
  return pod
}

const ADDRESS_PREFERENCE = ['InternalDNS', 'Hostname', 'InternalIP'] as const

/**
 * The agent address of a Node object (API JSON): the first of its
 * `status.addresses` of type InternalDNS, Hostname, InternalIP (in that order of
 * preference), else the node name; port from {@link NODE_AGENT_PORT_ANNOTATION}
 * or `agentPort`; TLS server name = the address when it is a DNS name, else the
 * node name. Undefined when the object has no name.
 */
export function nodeInfoFromObject(value: unknown, agentPort: number): NodeInfo | undefined {
  const obj = rec(value)
  const meta = rec(obj?.metadata)
  const name = str(meta?.name)
  if (obj === undefined || meta === undefined || !name) return undefined
  const addresses = rec(obj.status)?.addresses
  let address: string | undefined
  if (Array.isArray(addresses)) {
    for (const type of ADDRESS_PREFERENCE) {
      for (const a of addresses) {
        const entry = rec(a)
        const addr = str(entry?.address)
        if (entry?.type === type && addr !== undefined && addr !== '') {
          address = addr
          break
        }
      }
      if (address !== undefined) break
    }
  }
  address ??= name
  let port = agentPort
  const override = str(rec(meta.annotations)?.[NODE_AGENT_PORT_ANNOTATION])
  if (override !== undefined && /^\d{1,5}$/.test(override.trim())) {
    const n = Number(override.trim())
    if (n >= 1 && n <= 65535) port = n
  }
  return { name, address, port, tlsServerName: isIP(address) === 0 ? address : name }
}

export function samePod(a: PodInfo, b: PodInfo): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

export function sameNode(a: NodeInfo, b: NodeInfo): boolean {
  return (
    a.address === b.address &&
    a.port === b.port &&
    a.tlsServerName === b.tlsServerName &&
    a.name === b.name
  )
}
