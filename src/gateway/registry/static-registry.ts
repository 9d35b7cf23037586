/**
 * The static registry: pods and nodes from a YAML file (example in
 * config/registry.yaml), reloaded when the file changes. A reload that fails
 * validation keeps the previous view and logs every problem.
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { watchFile, unwatchFile } from 'node:fs'
import type { FromSchema } from 'json-schema-to-ts'
import { readYamlFile, validateConfig } from '../../shared/config.js'
import { describeError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import type {
  NodeInfo,
  PodInfo,
  PodRegistry,
  RegistryEvents,
  ServiceInfo,
  WorkloadInfo,
  WorkloadKind,
} from './types.js'

const schema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    nodes: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'address', 'port'],
        properties: {
          name: { type: 'string', minLength: 1 },
          address: { type: 'string', minLength: 1 },
          port: { type: 'integer', minimum: 1, maximum: 65535 },
          tlsServerName: { type: 'string' },
        },
      },
    },
    pods: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['namespace', 'name', 'node'],
        properties: {
          namespace: { type: 'string', minLength: 1 },
          name: { type: 'string', minLength: 1 },
          uid: { type: 'string' },
          node: { type: 'string' },
          phase: {
            enum: ['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'],
            default: 'Running',
          },
          labels: { type: 'object', additionalProperties: { type: 'string' } },
          ready: { type: 'boolean' },
          ports: {
            type: 'array',
            default: [],
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['containerPort'],
              properties: {
                name: { type: 'string' },
                containerPort: { type: 'integer', minimum: 1, maximum: 65535 },
                protocol: { enum: ['TCP', 'UDP', 'SCTP'], default: 'TCP' },
              },
            },
          },
        },
      },
    },
    services: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['namespace', 'name', 'ports'],
        properties: {
          namespace: { type: 'string', minLength: 1 },
          name: { type: 'string', minLength: 1 },
          selector: { type: 'object', additionalProperties: { type: 'string' } },
          ports: {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['port'],
              properties: {
                name: { type: 'string' },
                port: { type: 'integer', minimum: 1, maximum: 65535 },
                targetPort: {
                  anyOf: [
                    { type: 'integer', minimum: 1, maximum: 65535 },
                    { type: 'string', minLength: 1, maxLength: 15 },
                  ],
                },
                protocol: { enum: ['TCP', 'UDP', 'SCTP'], default: 'TCP' },
              },
            },
          },
        },
      },
    },
    workloads: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['kind', 'namespace', 'name', 'selector'],
        properties: {
          kind: { enum: ['Deployment', 'ReplicaSet', 'StatefulSet'] },
          namespace: { type: 'string', minLength: 1 },
          name: { type: 'string', minLength: 1 },
          selector: { type: 'object', additionalProperties: { type: 'string' } },
          replicas: { type: 'integer', minimum: 0 },
        },
      },
    },
  },
} as const

/** A registry's whole view. */
export interface RegistryView {
  pods: PodInfo[]
  nodes: NodeInfo[]
  services?: ServiceInfo[]
  workloads?: WorkloadInfo[]
}

/** The registry file as ajv leaves it: validated, every default filled in. */
type RawRegistry = FromSchema<typeof schema>

/** Stable UID for a pod without one: derived from its name (a static file has no API server). */
function syntheticUid(namespace: string, name: string): string {
  let h = 2166136261
  for (const c of `${namespace}/${name}`) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0
  const hex = h.toString(16).padStart(8, '0')
  return `${hex}-0000-4000-8000-${hex}${hex.slice(0, 4)}`
}

/** Parses and validates registry YAML content (already parsed to a value). */
export function parseRegistry(value: unknown, source: string): Required<RegistryView> {
  const raw = validateConfig<RawRegistry>(schema, value, source)
  return {
    nodes: raw.nodes.map((n) => ({ ...n })),
    services: raw.services.map((svc) => ({
      ...svc,
      ...(svc.selector !== undefined ? { selector: { ...svc.selector } } : {}),
      ports: svc.ports.map((x) => ({ ...x })),
    })),
    workloads: raw.workloads.map((w) => ({ ...w, selector: { ...w.selector } })),
    pods: raw.pods.map((p) => {
      const pod: PodInfo = {
        namespace: p.namespace,
        name: p.name,
        uid: p.uid ?? syntheticUid(p.namespace, p.name),
        nodeName: p.node,
        phase: p.phase,
        ports: p.ports.map((x) => ({ ...x })),
      }
      if (p.labels !== undefined) pod.labels = { ...p.labels }
      if (p.ready !== undefined) pod.ready = p.ready
      return pod
    }),
  }
}

/** A registry backed by a YAML file, or by data given directly (tests, embedded demo). */
export class StaticRegistry extends EventEmitter implements PodRegistry {
  #pods = new Map<string, PodInfo>()
  #nodes = new Map<string, NodeInfo>()
  #services = new Map<string, ServiceInfo>()
  #workloads = new Map<string, WorkloadInfo>()
  #ready = false
  readonly #file: string | undefined
  readonly #logger: Logger | undefined
  #watching = false

  constructor(source: { file: string; logger?: Logger } | RegistryView) {
    super()
    if ('file' in source) {
      this.#file = source.file
      this.#logger = source.logger
    } else {
      this.#file = undefined
      this.#apply(source)
    }
  }

  getPod(namespace: string, name: string): PodInfo | undefined {
    return this.#pods.get(`${namespace}/${name}`)
  }

  getNode(name: string): NodeInfo | undefined {
    return this.#nodes.get(name)
  }

  listPods(): PodInfo[] {
    return [...this.#pods.values()]
  }

  getService(namespace: string, name: string): ServiceInfo | undefined {
    return this.#services.get(`${namespace}/${name}`)
  }

  getWorkload(kind: WorkloadKind, namespace: string, name: string): WorkloadInfo | undefined {
    return this.#workloads.get(`${kind}/${namespace}/${name}`)
  }

  isReady(): boolean {
    return this.#ready
  }

  start(): Promise<void> {
    if (this.#file === undefined) {
      this.#setReady(true)
      return Promise.resolve()
    }
    try {
      this.#load()
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    if (!this.#watching) {
      this.#watching = true
      // watchFile (stat polling) survives editors that replace the file by rename.
      watchFile(this.#file, { interval: 1000, persistent: false }, (curr, prev) => {
        if (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size) return
        try {
          this.#load()
          this.#logger?.info({ file: this.#file }, 'registry reloaded')
        } catch (err) {
          this.#logger?.error(
            { file: this.#file, err: describeError(err) },
            'registry reload failed; keeping the previous view',
          )
        }
      })
    }
    return Promise.resolve()
  }

  close(): Promise<void> {
    if (this.#watching && this.#file !== undefined) unwatchFile(this.#file)
    this.#watching = false
    return Promise.resolve()
  }

  /** Replaces the whole view (embedded demo and tests). */
  replace(view: RegistryView): void {
    this.#apply(view)
  }

  #load(): void {
    const file = this.#file as string
    this.#apply(parseRegistry(readYamlFile(file), file))
    this.#setReady(true)
  }

  #setReady(ready: boolean): void {
    if (this.#ready === ready) return
    this.#ready = ready
    this.emit('ready', ready)
  }

  #apply(view: RegistryView): void {
    const now = new Date().toISOString()
    const services = new Map(
      (view.services ?? []).map((svc) => {
        const key = `${svc.namespace}/${svc.name}`
        svc.creationTimestamp ??= this.#services.get(key)?.creationTimestamp ?? now
        return [key, svc] as const
      }),
    )
    const workloads = new Map(
      (view.workloads ?? []).map((w) => {
        const key = `${w.kind}/${w.namespace}/${w.name}`
        w.creationTimestamp ??= this.#workloads.get(key)?.creationTimestamp ?? now
        return [key, w] as const
      }),
    )
    const pods = new Map(
      view.pods.map((p) => {
        const key = `${p.namespace}/${p.name}`
        // A file has no creation time: keep the first time we saw the pod.
        p.creationTimestamp ??= this.#pods.get(key)?.creationTimestamp ?? now
        return [key, p] as const
      }),
    )
    const nodes = new Map(view.nodes.map((n) => [n.name, n] as const))
    for (const [k, p] of this.#pods) if (!pods.has(k)) this.emit('pod', 'deleted', p)
    for (const [k, p] of pods) {
      const old = this.#pods.get(k)
      if (old === undefined) this.emit('pod', 'added', p)
      else if (JSON.stringify(old) !== JSON.stringify(p)) this.emit('pod', 'modified', p)
    }
    for (const [k, n] of this.#nodes) if (!nodes.has(k)) this.emit('node', 'deleted', n)
    for (const [k, n] of nodes) {
      const old = this.#nodes.get(k)
      if (old === undefined) this.emit('node', 'added', n)
      else if (JSON.stringify(old) !== JSON.stringify(n)) this.emit('node', 'modified', n)
    }
    this.#pods = pods
    this.#nodes = nodes
    this.#services = services
    this.#workloads = workloads
  }

  override on<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this {
    return super.on(event, listener)
  }

  override off<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this {
    return super.off(event, listener)
  }
}
