/**
 * The dev cluster: TLS material, a signing key, configs and a kubeconfig in
 * `.pfgate/`, then real processes — demo pods, agents `node-a` and `node-b`, and
 * the gateway — supervised (restarted on the same ports if they crash) and
 * stopped together. Tests start the same cluster with `startDevCluster`.
 *
 * @module
 */
import { execFileSync, fork, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify as toYaml } from 'yaml'
import { GATEWAY_IDENTITY_CN, GATEWAY_IDENTITY_URI } from '../protocol/constants.js'
import { certRemainingMs, createCa, isIssuedBy, issueCert } from './pki.js'
import type { CertKeyPair } from './pki.js'
import { DEV_AUDIENCE, DEV_ISSUER, createSigningKey, mintToken } from './token.js'
import { relayNodeFlags } from '../shared/node-flags.js'
import { ContainerdHarness, containerdUnavailable } from './containerd-harness.js'
import type { HarnessPod } from './containerd-harness.js'

/** The bin script that runs every component. */
export const PFGATE_BIN = fileURLToPath(new URL('../../../bin/pfgate.js', import.meta.url))

/** The dev cluster's demo pods: where they run, their labels and what they serve. */
export const DEMO_PODS = [
  {
    namespace: 'default',
    name: 'echo',
    node: 'node-a',
    kind: 'echo',
    labels: { app: 'echo' },
    ports: [
      { name: 'echo', containerPort: 5000 },
      { name: 'echo-alt', containerPort: 6000 },
    ],
  },
  {
    namespace: 'default',
    name: 'web',
    node: 'node-b',
    kind: 'http',
    labels: { app: 'web' },
    ports: [{ name: 'http', containerPort: 8080 }],
  },
  // The two replicas of the `hello` deployment, one per node (its page names the pod).
  {
    namespace: 'default',
    name: 'hello-6c7d9-q8x2m',
    node: 'node-a',
    kind: 'http',
    labels: { app: 'hello', 'pod-template-hash': '6c7d9' },
    ports: [{ name: 'http', containerPort: 8080 }],
  },
  {
    namespace: 'default',
    name: 'hello-6c7d9-z4k7p',
    node: 'node-b',
    kind: 'http',
    labels: { app: 'hello', 'pod-template-hash': '6c7d9' },
    ports: [{ name: 'http', containerPort: 8080 }],
  },
] as const

/** The dev cluster's services: `echo` (the echo pod) and `hello` (both replicas, port 80 → `http`). */
export const DEMO_SERVICES = [
  {
    namespace: 'default',
    name: 'echo',
    selector: { app: 'echo' },
    ports: [
      { name: 'echo', port: 5000, targetPort: 'echo', protocol: 'TCP' },
      { name: 'echo-alt', port: 6000, targetPort: 6000, protocol: 'TCP' },
    ],
  },
  {
    namespace: 'default',
    name: 'hello',
    selector: { app: 'hello' },
    ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }],
  },
] as const

/** The dev cluster's workloads: the `hello` deployment and its replica set. */
export const DEMO_WORKLOADS = [
  {
    kind: 'Deployment',
    namespace: 'default',
    name: 'hello',
    selector: { app: 'hello' },
    replicas: 2,
  },
  {
    kind: 'ReplicaSet',
    namespace: 'default',
    name: 'hello-6c7d9',
    selector: { app: 'hello', 'pod-template-hash': '6c7d9' },
    replicas: 2,
  },
] as const

/**
 * The dev cluster's UDP demo pod (not in containerd mode, whose busybox pods serve TCP,
 * nor in docker-compose): answers DNS queries for `*.internal` on port 53 and echoes any
 * other datagram, on both its ports.
 */
export const DEMO_UDP_PODS = [
  {
    namespace: 'default',
    name: 'dns',
    node: 'node-b',
    kind: 'udp',
    labels: { app: 'dns' },
    ports: [
      { name: 'dns', containerPort: 53, protocol: 'UDP' },
      { name: 'echo-udp', containerPort: 7007, protocol: 'UDP' },
    ],
  },
] as const

/** A demo pod of either list. */
type DemoPod = (typeof DEMO_PODS)[number] | (typeof DEMO_UDP_PODS)[number]

/** The protocol a demo pod's port declares. */
const portProtocol = (x: DemoPod['ports'][number]): string => ('protocol' in x ? x.protocol : 'TCP')

/** The dev cluster's nodes. */
export const DEV_NODES = ['node-a', 'node-b'] as const

/** Options for {@link startDevCluster}. */
export interface DevClusterOptions {
  /** State directory (default `.pfgate`). */
  dir: string
  /** Gateway port (default 8443; 0 picks one). */
  port: number
  host: string
  /** Extra gateway config merged over the generated one (tests). */
  gatewayOverrides?: Record<string, unknown>
  /** Log level of the children (default `info`; tests use `warn`). */
  logLevel?: string
  /** Where children's stderr goes (default: inherited); a number is an open file descriptor. */
  childStderr?: 'inherit' | 'ignore' | 'pipe' | number
  /** Called with one line per notable event. */
  log?: (line: string) => void
  /**
   * Run the demo pods in real network namespaces (`ip netns`), reached by the agents'
   * netns dialer with the agent config's pod UID → namespace map: `true` requires it,
   * `'auto'` uses it when possible (root and `ip`), `false` (default) uses host ports.
   */
  netns?: boolean | 'auto'
  /**
   * `containerd`: each node gets its own containerd (src/dev/containerd-harness.ts), the
   * demo pods run as real pods there, and the agents find them over CRI as on a real
   * node. Needs root and Debian's containerd, runc, containernetworking-plugins and
   * busybox-static.
   */
  runtime?: 'containerd'
}

/** A supervised child process. */
interface Child {
  name: string
  args: string[]
  /** Command prefix, e.g. `ip netns exec NAME` (the child still gets an IPC channel). */
  prefix?: string[]
  proc: ChildProcess | undefined
  ports: number[]
  stopping: boolean
  restarts: number
}

/** A running dev cluster. */
export interface DevCluster {
  dir: string
  gatewayUrl: string
  gatewayPort: number
  metricsPort: number | undefined
  kubeconfig: string
  token: string
  agentPorts: Record<string, number>
  podPorts: Record<string, number[]>
  /** Network namespace of each demo pod, when they run in namespaces (`netns` or `runtime`). */
  podNetns: Record<string, string> | undefined
  /** Each demo pod's UID (the registry's and the agents'). */
  podUids: Record<string, string>
  /** With `runtime: 'containerd'`: each node's containerd, to add, stop or recreate pods. */
  runtimes: Record<string, ContainerdHarness> | undefined
  /** With `runtime: 'containerd'`: the demo pods as the runtime runs them. */
  runtimePods: Record<string, HarnessPod> | undefined
  /**
   * Kills a component (e.g. `agent:node-a`) with a signal; it is restarted unless `restart`
   * is false. Resolves with how the process exited.
   */
  kill(
    name: string,
    signal?: NodeJS.Signals,
    restart?: boolean,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Starts a component that was killed with restart=false. */
  restart(name: string): Promise<void>
  /** The pid of a component. */
  pid(name: string): number | undefined
  stop(): Promise<void>
}

function writeSecret(path: string, data: string): void {
  writeFileSync(path, data, { mode: 0o600 })
  chmodSync(path, 0o600)
}

function readPair(dir: string, base: string): CertKeyPair | undefined {
  const cert = join(dir, `${base}.crt`)
  const key = join(dir, `${base}.key`)
  if (!existsSync(cert) || !existsSync(key)) return undefined
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') }
}

function writePair(dir: string, base: string, pair: CertKeyPair): void {
  writeFileSync(join(dir, `${base}.crt`), pair.cert)
  writeSecret(join(dir, `${base}.key`), pair.key)
}

/**
 * Creates (or keeps, when still valid) the dev PKI and signing key in `dir`:
 * a CA, the gateway's serving and client certificates, one certificate per agent.
 */
export async function ensureMaterial(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
  const DAY = 86_400_000
  let ca = readPair(dir, 'ca')
  let fresh = false
  if (ca === undefined || certRemainingMs(ca.cert) < 7 * DAY) {
    ca = await createCa('pfgate dev CA')
    writePair(dir, 'ca', ca)
    fresh = true
  }
  const leaf = async (base: string, opts: Parameters<typeof issueCert>[1]): Promise<void> => {
    const have = readPair(dir, base)
    if (
      !fresh &&
      have !== undefined &&
      isIssuedBy(have.cert, ca.cert) &&
      certRemainingMs(have.cert) > 7 * DAY
    ) {
      return
    }
    writePair(dir, base, await issueCert(ca, opts))
  }
  await leaf('gateway', {
    commonName: 'pfgate-gateway-server',
    dnsNames: ['localhost', 'gateway', 'pfgate-gateway'],
    ipAddresses: ['127.0.0.1', '::1'],
  })
  await leaf('gateway-client', {
    commonName: GATEWAY_IDENTITY_CN,
    uris: [GATEWAY_IDENTITY_URI],
    serverAuth: false,
    clientAuth: true,
  })
  // The agent endpoint's certificate (reverse mode): the gateway's identity, as a server.
  await leaf('gateway-agents', {
    commonName: GATEWAY_IDENTITY_CN,
    uris: [GATEWAY_IDENTITY_URI],
    dnsNames: ['localhost', 'gateway', 'pfgate-gateway'],
    ipAddresses: ['127.0.0.1', '::1'],
  })
  for (const node of DEV_NODES) {
    // clientAuth too: in reverse mode the agent presents it when it dials the gateway.
    await leaf(`agent-${node}`, {
      commonName: `pfgate-agent-${node}`,
      dnsNames: [node, `agent-${node}`, 'localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
      clientAuth: true,
    })
  }
  if (!existsSync(join(dir, 'signing-key.jwk')) || !existsSync(join(dir, 'jwks.json'))) {
    await createSigningKey(dir)
  }
}

/** Writes `.pfgate/kubeconfig` for `server` with a dev token. */
export function writeKubeconfig(dir: string, server: string, token: string): string {
  const path = join(dir, 'kubeconfig')
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': 'pfgate-dev',
    clusters: [
      {
        name: 'pfgate-dev',
        cluster: {
          server,
          'certificate-authority-data': readFileSync(join(dir, 'ca.crt')).toString('base64'),
        },
      },
    ],
    users: [{ name: 'dev', user: { token } }],
    contexts: [
      { name: 'pfgate-dev', context: { cluster: 'pfgate-dev', user: 'dev', namespace: 'default' } },
    ],
    preferences: {},
  }
  writeSecret(path, toYaml(doc))
  return path
}

/** The generated gateway config (paths relative to `dir`). */
export function devGatewayConfig(
  port: number,
  host: string,
  logLevel: string,
): Record<string, unknown> {
  return {
    listen: { host, port },
    tls: { cert: 'gateway.crt', key: 'gateway.key' },
    metrics: { host: '127.0.0.1', port: 0 },
    agents: { ca: 'ca.crt', cert: 'gateway-client.crt', key: 'gateway-client.key' },
    registry: { source: 'static', file: 'registry.yaml' },
    auth: { issuer: DEV_ISSUER, audience: DEV_AUDIENCE, jwks: { file: 'jwks.json' } },
    authorization: {
      rules: [
        {
          groups: ['pfgate:developers'],
          namespaces: ['default'],
          pods: ['*'],
          services: ['*'],
          workloads: ['*/*'],
          ports: ['1-65535'],
          udpPorts: ['1-65535'],
        },
      ],
      admins: { groups: ['pfgate:admins'] },
    },
    audit: {
      mode: 'blocking-strict',
      sinks: [
        { type: 'file', path: 'audit/audit.log', fsync: 'always', maxSize: '50MiB', maxFiles: 5 },
      ],
    },
    shutdownGrace: '5s',
    logLevel,
  }
}

export function deepMerge(
  a: Record<string, unknown>,
  b: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a }
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k]
    if (
      v !== null &&
      typeof v === 'object' &&
      !Array.isArray(v) &&
      cur !== null &&
      typeof cur === 'object' &&
      !Array.isArray(cur)
    ) {
      out[k] = deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>)
    } else {
      out[k] = v
    }
  }
  return out
}

/** Starts the whole dev cluster. */
export async function startDevCluster(options: DevClusterOptions): Promise<DevCluster> {
  const dir = resolve(options.dir)
  const log = options.log ?? (() => undefined)
  const logLevel = options.logLevel ?? 'info'
  await ensureMaterial(dir)
  const children = new Map<string, Child>()
  let stopped = false
  const allPods: readonly DemoPod[] =
    options.runtime === 'containerd' ? DEMO_PODS : [...DEMO_PODS, ...DEMO_UDP_PODS]

  const spawnChild = (c: Child): Promise<number[]> =>
    new Promise((resolveStart, reject) => {
      const stdio = ['ignore', 'inherit', options.childStderr ?? 'inherit', 'ipc'] as const
      // The gateway and the agents run as a deployment should (src/shared/node-flags.ts).
      const relays = c.args[0] === 'gateway' || c.args[0] === 'agent'
      const flags = relays ? relayNodeFlags() : []
      // Each child in its own process group: the terminal's Ctrl-C reaches only this
      // supervisor, which stops the gateway first (it drains while the agents and pods
      // still carry its streams), then the agents, then the pods. A child whose
      // supervisor vanished stops when its IPC channel closes.
      const proc =
        c.prefix === undefined
          ? fork(PFGATE_BIN, c.args, {
              cwd: dir,
              detached: true,
              stdio: [...stdio],
              env: { ...process.env },
              execArgv: [
                ...process.execArgv,
                ...flags.filter((f) => !process.execArgv.includes(f)),
              ],
            })
          : spawn(
              c.prefix[0] as string,
              [...c.prefix.slice(1), process.execPath, ...flags, PFGATE_BIN, ...c.args],
              {
                cwd: dir,
                detached: true,
                stdio: [...stdio],
                env: { ...process.env },
              },
            )
      c.proc = proc
      let started = false
      const timer = setTimeout(() => {
        if (!started) {
          proc.kill('SIGKILL')
          reject(new Error(`${c.name} did not start within 20 s`))
        }
      }, 20_000)
      proc.on('message', (m: { type?: string; port?: number; ports?: number[] }) => {
        if (m.type !== 'listening' || started) return
        started = true
        clearTimeout(timer)
        const ports = m.ports ?? (m.port !== undefined ? [m.port] : [])
        if (c.ports.length === 0) c.ports = ports
        resolveStart(ports)
      })
      proc.once('exit', (code, signal) => {
        clearTimeout(timer)
        if (!started) {
          reject(
            new Error(
              `${c.name} exited during start-up (code ${code ?? 'none'}, signal ${signal ?? 'none'})`,
            ),
          )
          return
        }
        if (stopped || c.stopping) return
        c.restarts++
        const delay = Math.min(5000, 200 * 2 ** Math.min(c.restarts, 5))
        log(
          `${c.name} exited (code ${code ?? 'none'}, signal ${signal ?? 'none'}); restarting in ${delay} ms`,
        )
        setTimeout(() => {
          if (stopped || c.stopping) return
          spawnChild(c).then(
            () => log(`${c.name} restarted`),
            (err: unknown) => log(`${c.name} restart failed: ${String(err)}`),
          )
        }, delay).unref()
      })
    })

  const start = async (name: string, args: string[], prefix?: string[]): Promise<number[]> => {
    const c: Child = { name, args, proc: undefined, ports: [], stopping: false, restarts: 0 }
    if (prefix !== undefined) c.prefix = prefix
    children.set(name, c)
    const ports = await spawnChild(c)
    // Restarts reuse the same ports so the registry and configs stay true.
    c.args = pinPorts(c)
    return ports
  }

  const stopChild = async (c: Child, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    c.stopping = true
    const p = c.proc
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return
    await new Promise<void>((r) => {
      const t = setTimeout(() => p.kill('SIGKILL'), 8000)
      p.once('exit', () => {
        clearTimeout(t)
        r()
      })
      p.kill(signal)
    })
  }

  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    const order = [
      'gateway',
      ...DEV_NODES.map((n) => `agent:${n}`),
      ...allPods.map((p) => `pod:${p.name}`),
    ]
    for (const name of order) {
      const c = children.get(name)
      if (c !== undefined) await stopChild(c)
    }
    if (runtimes === undefined) {
      for (const ns of Object.values(podNetns ?? {})) deleteNetns(ns)
    }
    await Promise.all(Object.values(runtimes ?? {}).map((h) => h.close()))
  }

  let podNetns: Record<string, string> | undefined
  let runtimes: Record<string, ContainerdHarness> | undefined
  let runtimePods: Record<string, HarnessPod> | undefined
  const podUids: Record<string, string> = Object.fromEntries(
    allPods.map((p) => [p.name, randomUUID()]),
  )
  if (options.runtime === 'containerd') {
    if (options.netns === true)
      throw new Error('--netns and --runtime containerd exclude each other')
    const why = containerdUnavailable()
    if (why !== undefined) throw new Error(`--runtime containerd: ${why}`)
  } else if (options.netns === true || options.netns === 'auto') {
    const why = netnsUnavailable()
    if (why === undefined) {
      const id = Math.random().toString(36).slice(2, 8)
      podNetns = Object.fromEntries(allPods.map((p) => [p.name, `pfgate-${id}-${p.name}`]))
    } else if (options.netns === true) {
      throw new Error(`--netns: ${why}`)
    } else {
      log(`network namespaces unavailable (${why}); demo pods use host ports instead`)
    }
  }

  try {
    // 1. Demo pods. On host ports: real TCP servers on free ports. In namespaces: each
    // listens on its real container ports on its own loopback. In containerd: real pods.
    const podPorts: Record<string, number[]> = {}
    if (options.runtime === 'containerd') {
      runtimes = {}
      runtimePods = {}
      podNetns = {}
      for (const node of DEV_NODES) {
        runtimes[node] = await ContainerdHarness.start({ name: node, log })
        log(`containerd for ${node}: unix://${runtimes[node].socketPath}`)
      }
      for (const pod of DEMO_PODS) {
        const run = await (runtimes[pod.node] as ContainerdHarness).runPod({
          namespace: pod.namespace,
          name: pod.name,
          uid: podUids[pod.name],
          labels: { ...pod.labels },
          containers: [{ name: pod.kind, command: demoPodCommand(pod) }],
        })
        runtimePods[pod.name] = run
        podNetns[pod.name] = run.netnsPath
        podPorts[pod.name] = pod.ports.map((p) => p.containerPort)
      }
    } else {
      for (const pod of allPods) {
        const ns = podNetns?.[pod.name]
        if (ns !== undefined) createNetns(ns)
        podPorts[pod.name] = await start(
          `pod:${pod.name}`,
          [
            'demo-pod',
            '--kind',
            pod.kind,
            '--name',
            pod.name,
            ...pod.ports.flatMap((p) => [
              '--listen',
              ns !== undefined ? `127.0.0.1:${p.containerPort}` : '127.0.0.1:0',
            ]),
          ],
          ns !== undefined ? ['ip', 'netns', 'exec', ns] : undefined,
        )
      }
    }
    // 2. Agents: a static dialer to the pods' host ports, or the netns dialer that finds
    // each pod by UID (in its own config's map, or in its node's containerd over CRI).
    const agentPorts: Record<string, number> = {}
    for (const node of DEV_NODES) {
      const mine = allPods.filter((p) => p.node === node)
      const runtime = runtimes?.[node]
      let dialer: Record<string, unknown>
      let pods: Record<string, unknown>[]
      if (runtime !== undefined) {
        dialer = { type: 'netns', namespaces: 'runtime', connectTimeout: '5s' }
        pods = []
      } else if (podNetns !== undefined) {
        dialer = { type: 'netns', namespaces: 'config', connectTimeout: '5s' }
        pods = mine.map((p) => ({
          namespace: p.namespace,
          name: p.name,
          uid: podUids[p.name],
          netns: podNetns?.[p.name],
        }))
      } else {
        dialer = { type: 'static', connectTimeout: '5s' }
        pods = mine.map((p) => ({
          namespace: p.namespace,
          name: p.name,
          host: '127.0.0.1',
          ports: Object.fromEntries(
            p.ports.map((x, i) => [
              String(x.containerPort),
              (podPorts[p.name] as number[])[i] as number,
            ]),
          ),
        }))
      }
      const file = join(dir, `agent-${node}.yaml`)
      writeFileSync(
        file,
        toYaml({
          nodeName: node,
          listen: { host: '127.0.0.1', port: 0 },
          tls: { cert: `agent-${node}.crt`, key: `agent-${node}.key`, clientCa: 'ca.crt' },
          allowedClients: [GATEWAY_IDENTITY_URI],
          dialer,
          ...(runtime !== undefined ? { runtime: { endpoint: runtime.socketPath } } : {}),
          pods,
          shutdownGrace: '5s',
          logLevel,
        }),
      )
      agentPorts[node] = (await start(`agent:${node}`, ['agent', '--config', file]))[0] as number
    }
    // 3. The registry the gateway resolves from (with the pods' UIDs: the agents check them).
    writeFileSync(
      join(dir, 'registry.yaml'),
      toYaml({
        nodes: DEV_NODES.map((n) => ({
          name: n,
          address: '127.0.0.1',
          port: agentPorts[n],
          tlsServerName: n,
        })),
        pods: allPods.map((p) => ({
          namespace: p.namespace,
          name: p.name,
          uid: podUids[p.name],
          node: p.node,
          phase: 'Running',
          labels: { ...p.labels },
          ports: p.ports.map((x) => ({
            name: x.name,
            containerPort: x.containerPort,
            protocol: portProtocol(x),
          })),
        })),
        services: DEMO_SERVICES,
        workloads: DEMO_WORKLOADS,
      }),
    )
    // 4. The gateway.
    mkdirSync(join(dir, 'audit'), { recursive: true, mode: 0o700 })
    const gwFile = join(dir, 'gateway.yaml')
    writeFileSync(
      gwFile,
      toYaml(
        deepMerge(
          devGatewayConfig(options.port, options.host, logLevel),
          options.gatewayOverrides ?? {},
        ),
      ),
    )
    const gwProc = { metricsPort: undefined as number | undefined }
    const gwChild: Child = {
      name: 'gateway',
      args: ['gateway', '--config', gwFile],
      proc: undefined,
      ports: [],
      stopping: false,
      restarts: 0,
    }
    children.set('gateway', gwChild)
    const gwPorts = await new Promise<number[]>((res, rej) => {
      spawnChild(gwChild).then(res, rej)
      gwChild.proc?.on('message', (m: { type?: string; metricsPort?: number }) => {
        if (m.type === 'listening') gwProc.metricsPort = m.metricsPort
      })
    })
    gwChild.args = ['gateway', '--config', gwFile, '--port', String(gwPorts[0])]
    const gatewayPort = gwPorts[0] as number
    const urlHost = options.host.includes(':')
      ? `[${options.host}]`
      : options.host === '0.0.0.0'
        ? '127.0.0.1'
        : options.host
    const gatewayUrl = `https://${urlHost}:${gatewayPort}`
    const token = await mintToken(dir, {
      subject: 'dev',
      groups: ['pfgate:developers', 'pfgate:admins'],
      ttlMs: 30 * 86_400_000,
    })
    const kubeconfig = writeKubeconfig(dir, gatewayUrl, token)
    return {
      dir,
      gatewayUrl,
      gatewayPort,
      metricsPort: gwProc.metricsPort,
      kubeconfig,
      token,
      agentPorts,
      podPorts,
      podNetns,
      podUids,
      runtimes,
      runtimePods,
      pid: (name) => children.get(name)?.proc?.pid,
      async kill(name, signal = 'SIGKILL', restart = true) {
        const c = children.get(name)
        if (c === undefined) throw new RangeError(`no component ${name}`)
        if (!restart) c.stopping = true
        const p = c.proc
        if (p === undefined || p.exitCode !== null || p.signalCode !== null) {
          return { code: p?.exitCode ?? null, signal: p?.signalCode ?? null }
        }
        return new Promise((r) => {
          p.once('exit', (code, sig) => r({ code, signal: sig }))
          p.kill(signal)
        })
      },
      async restart(name) {
        const c = children.get(name)
        if (c === undefined) throw new RangeError(`no component ${name}`)
        c.stopping = false
        await spawnChild(c)
      },
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/** Why network namespaces cannot be used here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not running as root'
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' })
  } catch {
    return '`ip netns` is not available (install iproute2)'
  }
  try {
    execFileSync('nsenter', ['--version'], { stdio: 'ignore' })
  } catch {
    return '`nsenter` is not available (install util-linux)'
  }
  return undefined
}

function createNetns(name: string): void {
  execFileSync('ip', ['netns', 'add', name], { stdio: 'ignore' })
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { stdio: 'ignore' })
}

function deleteNetns(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' })
  } catch {
    // already gone
  }
}

/**
 * The busybox command a demo pod runs in containerd: `nc` echo servers (a `cat` per
 * connection) on the echo pod's ports, `httpd` with a page naming the pod on the
 * http pod's.
 */
function demoPodCommand(pod: DemoPod): string[] {
  const bb = '/bin/busybox'
  const servers = pod.ports.map((p) =>
    pod.kind === 'echo'
      ? `${bb} nc -ll -p ${p.containerPort} -e ${bb} cat &`
      : `${bb} httpd -f -p ${p.containerPort} -h /www &`,
  )
  return [
    bb,
    'sh',
    '-c',
    [`echo 'hello from ${pod.name}' > /www/index.html`, ...servers, 'wait'].join('\n'),
  ]
}

/** Rewrites a child's args so a restart binds the ports it got the first time. */
function pinPorts(c: Child): string[] {
  const args = [...c.args]
  if (args[0] === 'demo-pod') {
    let i = 0
    return args.map((a, idx) =>
      idx > 0 && args[idx - 1] === '--listen' ? `127.0.0.1:${c.ports[i++] ?? 0}` : a,
    )
  }
  if (args[0] === 'agent' && c.ports[0] !== undefined)
    return [...args, '--port', String(c.ports[0])]
  return args
}
