/**
 * Test helpers: several gateway replicas behind a real HAProxy (TCP mode), with agents
 * that run inside network namespaces and dial out (reverse mode) or are dialed (direct
 * mode). Each node's namespace reaches the host over a veth pair; in reverse mode an
 * nftables rule in the namespace drops every connection that does not start there, so
 * the gateways cannot dial in. Everything is real processes; {@link ReplicaSet.stop}
 * removes all of it.
 *
 * @module
 */
import { fork, spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify as toYaml } from 'yaml'
import {
  DEV_NODES,
  PFGATE_BIN,
  deepMerge,
  devGatewayConfig,
  ensureMaterial,
  writeKubeconfig,
} from '../../src/dev/cluster.js'
import { mintToken } from '../../src/dev/token.js'
import { GATEWAY_IDENTITY_URI } from '../../src/protocol/constants.js'
import { relayNodeFlags } from '../../src/shared/node-flags.js'
import { createNetns, startServerInNetns } from './netns.js'
import type { NetnsServer, TestNetns } from './netns.js'
import { metricValue, scrape } from './gateway.js'

/** One gateway replica process. */
export interface Replica {
  name: string
  proc: ChildProcess | undefined
  clientPort: number
  agentPort: number
  metricsPort: number
  config: string
  auditDir: string
  /** The running instance's gateway id (a new one after each restart). */
  gatewayId: string
}

/** One node: its namespace, the host's and the namespace's addresses, its echo pod. */
export interface ReplicaNode {
  name: string
  netns: TestNetns
  hostIp: string
  nsIp: string
  pod: NetnsServer
  /** The pod's namespace/name as the registry knows it. */
  podName: string
  agent: ChildProcess | undefined
  agentConfig: string
}

/** A running replica set. */
export interface ReplicaSet {
  dir: string
  mode: 'reverse' | 'direct'
  replicas: Replica[]
  nodes: ReplicaNode[]
  /** The load balancer's client frontend. */
  lbUrl: string
  lbPort: number
  /** A kubeconfig for the load balancer with an admin+developer token. */
  kubeconfig: string
  token: string
  /** SIGKILL (or `signal`) replica `i`; resolves once it exited. */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>
  /** Starts replica `i` again on its ports (same config, same audit directory). */
  restart(i: number): Promise<void>
  /** Resolves once every live replica has every agent connected (reverse) or at once. */
  waitConnected(timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

/** Options for {@link startReplicaSet}. */
export interface ReplicaSetOptions {
  replicas: number
  mode: 'reverse' | 'direct'
  logLevel?: string
  /** Extra gateway config merged over the generated one. */
  gatewayOverrides?: Record<string, unknown>
  /** Also ship every replica's audit records to this collector (webhook sink). */
  webhookUrl?: string
}

function sh(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input })
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${r.error?.message ?? r.stderr.trim()}`)
  }
}

/** A free TCP port on `host` (bound and released: good enough on a quiet loopback). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, host, () => {
      const { port } = s.address() as AddressInfo
      s.close(() => resolve(port))
    })
  })
}

/** Forks `pfgate …args` (optionally inside `netns`) and waits for its `listening` message. */
function startProcess(
  args: string[],
  cwd: string,
  netns?: string,
): Promise<{ proc: ChildProcess; msg: Record<string, number | string | undefined> }> {
  const stderr = process.env.PFGATE_TEST_LOG_LEVEL !== undefined ? 'inherit' : 'ignore'
  const stdio = ['ignore', 'inherit', stderr, 'ipc'] as const
  const flags = relayNodeFlags()
  const proc =
    netns === undefined
      ? fork(PFGATE_BIN, args, { cwd, stdio: [...stdio], execArgv: flags })
      : spawn('ip', ['netns', 'exec', netns, process.execPath, ...flags, PFGATE_BIN, ...args], {
          cwd,
          stdio: [...stdio],
        })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`pfgate ${args[0]} did not start within 20 s`))
    }, 20_000)
    proc.on('message', (m: Record<string, number | string | undefined>) => {
      if (m.type !== 'listening') return
      clearTimeout(timer)
      resolve({ proc, msg: m })
    })
    proc.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`pfgate ${args[0]} exited during start-up (${code ?? signal})`))
    })
  })
}

function stopProcess(
  p: ChildProcess | undefined,
  signal: NodeJS.Signals = 'SIGTERM',
): Promise<void> {
  if (p === undefined || p.exitCode !== null || p.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(() => p.kill('SIGKILL'), 8000)
    p.once('exit', () => {
      clearTimeout(t)
      resolve()
    })
    p.kill(signal)
  })
}

/** Gives namespace `ns` a veth link to the host: host side `.1/30`, namespace side `.2/30`. */
function linkNamespace(
  ns: TestNetns,
  tag: string,
): { hostIp: string; nsIp: string; hostIf: string } {
  const b = 1 + Math.floor(Math.random() * 250)
  const c = 4 * Math.floor(Math.random() * 63)
  const base = `10.215.${b}.`
  const hostIp = `${base}${c + 1}`
  const nsIp = `${base}${c + 2}`
  const hostIf = `vh${tag}`
  const nsIf = `vn${tag}`
  sh('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf])
  sh('ip', ['link', 'set', nsIf, 'netns', ns.name])
  sh('ip', ['addr', 'add', `${hostIp}/30`, 'dev', hostIf])
  sh('ip', ['link', 'set', hostIf, 'up'])
  sh('ip', ['-n', ns.name, 'addr', 'add', `${nsIp}/30`, 'dev', nsIf])
  sh('ip', ['-n', ns.name, 'link', 'set', nsIf, 'up'])
  sh('ip', ['-n', ns.name, 'route', 'add', 'default', 'via', hostIp])
  return { hostIp, nsIp, hostIf }
}

/**
 * Drops every TCP connection into namespace `ns` that the namespace did not open (a node
 * behind NAT or a firewall that allows only outbound connections).
 */
function outboundOnly(ns: TestNetns): void {
  sh(
    'ip',
    ['netns', 'exec', ns.name, 'nft', '-f', '-'],
    [
      'table inet pfgate_outbound_only {',
      '  chain input {',
      '    type filter hook input priority 0; policy accept;',
      '    iifname "lo" accept',
      '    ct state established,related accept',
      '    meta l4proto tcp ct state new drop',
      '  }',
      '}',
    ].join('\n'),
  )
}

function haproxyConfig(
  lbPort: number,
  agentBinds: string[],
  replicas: Replica[],
  direct: boolean,
): string {
  const servers = (port: (r: Replica) => number): string[] =>
    replicas.map(
      (r) =>
        `  server ${r.name} 127.0.0.1:${port(r)} check inter 300 fall 1 rise 1 on-marked-down shutdown-sessions`,
    )
  return [
    'global',
    '  maxconn 4000',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 1h',
    '  timeout server 1h',
    '  timeout tunnel 1h',
    '  retries 3',
    '  option redispatch',
    'frontend clients',
    `  bind 127.0.0.1:${lbPort}`,
    '  default_backend gateways',
    'backend gateways',
    '  balance roundrobin',
    ...servers((r) => r.clientPort),
    ...(direct
      ? []
      : [
          'frontend agents',
          ...agentBinds.map((b) => `  bind ${b}`),
          '  default_backend gateway-agents',
          'backend gateway-agents',
          '  balance roundrobin',
          ...servers((r) => r.agentPort),
        ]),
    '',
  ].join('\n')
}

/** Starts a replica set; see the module comment. */
export async function startReplicaSet(options: ReplicaSetOptions): Promise<ReplicaSet> {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-replicas-'))
  const logLevel = options.logLevel ?? process.env.PFGATE_TEST_LOG_LEVEL ?? 'error'
  const reverse = options.mode === 'reverse'
  const replicas: Replica[] = []
  const nodes: ReplicaNode[] = []
  const hostIfs: string[] = []
  let haproxy: ChildProcess | undefined
  let stopped = false

  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await Promise.all(replicas.map((r) => stopProcess(r.proc)))
    await Promise.all(nodes.map((n) => stopProcess(n.agent)))
    await stopProcess(haproxy)
    for (const n of nodes) await n.pod.stop()
    for (const n of nodes) n.netns.destroy()
    for (const i of hostIfs) spawnSync('ip', ['link', 'del', i], { stdio: 'ignore' })
    rmSync(dir, { recursive: true, force: true })
  }

  try {
    await ensureMaterial(dir)
    const tag = randomBytes(3).toString('hex')
    // 1. Nodes: a namespace each, linked to the host, with an echo pod on all addresses.
    for (const [i, name] of DEV_NODES.entries()) {
      const netns = createNetns({ prefix: `pfg-i15-${name}` })
      const link = linkNamespace(netns, `${tag}${i}`)
      hostIfs.push(link.hostIf)
      if (reverse) outboundOnly(netns)
      const pod = await startServerInNetns(netns.name, 'echo', { host: '0.0.0.0' })
      nodes.push({
        name,
        netns,
        hostIp: link.hostIp,
        nsIp: link.nsIp,
        pod,
        podName: `echo-${name}`,
        agent: undefined,
        agentConfig: join(dir, `agent-${name}.yaml`),
      })
    }
    // 2. The registry: in reverse mode the nodes' addresses are where nothing can be dialed.
    const agentListenPort = 10250
    writeFileSync(
      join(dir, 'registry.yaml'),
      toYaml({
        nodes: nodes.map((n) => ({
          name: n.name,
          address: n.nsIp,
          port: agentListenPort,
          tlsServerName: n.name,
        })),
        pods: nodes.map((n) => ({
          namespace: 'default',
          name: n.podName,
          uid: randomUUID(),
          node: n.name,
          phase: 'Running',
          ports: [{ containerPort: 5000, protocol: 'TCP' }],
        })),
      }),
    )
    // 3. Replicas on free ports, each with its own audit trail.
    for (let i = 0; i < options.replicas; i++) {
      const name = `gw${i}`
      const auditDir = join(dir, `audit-${name}`)
      mkdirSync(auditDir, { recursive: true, mode: 0o700 })
      const r: Replica = {
        name,
        proc: undefined,
        clientPort: 0,
        agentPort: 0,
        metricsPort: 0,
        config: join(dir, `${name}.yaml`),
        auditDir,
        gatewayId: '',
      }
      replicas.push(r)
    }
    const writeReplicaConfig = (r: Replica): void => {
      const base = devGatewayConfig(r.clientPort, '127.0.0.1', logLevel)
      const mine: Record<string, unknown> = {
        metrics: { host: '127.0.0.1', port: r.metricsPort },
        audit: {
          mode: 'blocking-strict',
          sinks: [
            { type: 'file', path: join(r.auditDir, 'audit.log'), fsync: 'always' },
            ...(options.webhookUrl !== undefined
              ? [
                  {
                    type: 'webhook',
                    url: options.webhookUrl,
                    spoolDir: join(r.auditDir, 'spool'),
                    timeout: '2s',
                  },
                ]
              : []),
          ],
        },
        agents: reverse
          ? {
              mode: 'reverse',
              keepalive: '2s',
              reverse: {
                host: '127.0.0.1',
                port: r.agentPort,
                cert: 'gateway-agents.crt',
                key: 'gateway-agents.key',
                replicas: options.replicas,
              },
            }
          : { keepalive: '2s' },
        // One admin view: every replica's client port is a peer (itself included: it
        // recognises its own answer by the gateway id).
        peers: {
          urls: replicas.map((x) => `https://127.0.0.1:${x.clientPort}`),
          caFile: 'ca.crt',
          timeout: '2s',
        },
        shutdownGrace: '2s',
      }
      writeFileSync(
        r.config,
        toYaml(deepMerge(deepMerge(base, mine), options.gatewayOverrides ?? {})),
      )
    }
    // Ports chosen up front: each replica's config names its peers.
    for (const r of replicas) {
      r.clientPort = await freePort()
      r.agentPort = await freePort()
      r.metricsPort = await freePort()
    }
    await Promise.all(
      replicas.map(async (r) => {
        writeReplicaConfig(r)
        const { proc, msg } = await startProcess(['gateway', '--config', r.config], dir)
        r.proc = proc
        r.clientPort = msg.port as number
        r.agentPort = (msg.agentPort as number | undefined) ?? 0
        r.metricsPort = msg.metricsPort as number
        r.gatewayId = msg.gatewayId as string
      }),
    )
    // 4. HAProxy in TCP mode: clients on loopback, agents on each node's host address.
    const lbPort = await freePort()
    const agentLbPort = await freePort()
    const haCfg = join(dir, 'haproxy.cfg')
    writeFileSync(
      haCfg,
      haproxyConfig(
        lbPort,
        nodes.map((n) => `${n.hostIp}:${agentLbPort}`),
        replicas,
        !reverse,
      ),
    )
    haproxy = spawn('haproxy', ['-db', '-f', haCfg], { stdio: ['ignore', 'ignore', 'pipe'] })
    let haErr = ''
    haproxy.stderr?.on('data', (d: Buffer) => (haErr += d.toString()))
    await waitListening(
      lbPort,
      () => haproxy?.exitCode !== null,
      () => haErr,
    )
    // 5. Agents inside the namespaces.
    for (const n of nodes) {
      writeFileSync(
        n.agentConfig,
        toYaml({
          nodeName: n.name,
          listen: reverse ? null : { host: '0.0.0.0', port: agentListenPort },
          ...(reverse
            ? {
                reverse: {
                  gateway: `${n.hostIp}:${agentLbPort}`,
                  keepalive: '2s',
                  backoffInitial: '100ms',
                  backoffMax: '1s',
                  resync: '5s',
                },
              }
            : {}),
          tls: { cert: `agent-${n.name}.crt`, key: `agent-${n.name}.key`, clientCa: 'ca.crt' },
          allowedClients: [GATEWAY_IDENTITY_URI],
          dialer: { type: 'static', connectTimeout: '5s' },
          pods: [
            {
              namespace: 'default',
              name: n.podName,
              host: '127.0.0.1',
              ports: { '5000': n.pod.port },
            },
          ],
          shutdownGrace: '2s',
          logLevel,
        }),
      )
      n.agent = (await startProcess(['agent', '--config', n.agentConfig], dir, n.netns.name)).proc
    }
    const token = await mintToken(dir, {
      subject: 'dev',
      groups: ['pfgate:developers', 'pfgate:admins'],
      ttlMs: 3_600_000,
    })
    const lbUrl = `https://127.0.0.1:${lbPort}`
    const kubeconfig = writeKubeconfig(dir, lbUrl, token)
    const set: ReplicaSet = {
      dir,
      mode: options.mode,
      replicas,
      nodes,
      lbUrl,
      lbPort,
      kubeconfig,
      token,
      async kill(i, signal = 'SIGKILL') {
        await stopProcess(replicas[i]?.proc, signal)
      },
      async restart(i) {
        const r = replicas[i] as Replica
        const { proc, msg } = await startProcess(['gateway', '--config', r.config], dir)
        r.proc = proc
        r.gatewayId = msg.gatewayId as string
      },
      async waitConnected(timeoutMs = 15_000) {
        if (!reverse) return
        const deadline = Date.now() + timeoutMs
        for (;;) {
          const live = replicas.filter(
            (r) => r.proc?.exitCode === null && r.proc.signalCode === null,
          )
          const counts = await Promise.all(
            live.map(async (r) =>
              metricValue(await scrape(r.metricsPort).catch(() => ''), 'pfgate_agent_sessions'),
            ),
          )
          if (counts.every((c) => c === nodes.length)) return
          if (Date.now() > deadline) {
            throw new Error(`agents not connected to every replica: ${JSON.stringify(counts)}`)
          }
          await new Promise((r) => setTimeout(r, 100))
        }
      },
      stop,
    }
    await set.waitConnected()
    return set
  } catch (err) {
    await stop()
    throw err
  }
}

async function waitListening(port: number, died: () => boolean, why: () => string): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer()
      s.once('error', () => resolve(true))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)))
    })
    if (ok) return
    if (died()) throw new Error(`haproxy exited: ${why()}`)
    if (Date.now() > deadline) throw new Error(`haproxy did not listen: ${why()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
