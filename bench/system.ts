/**
 * The system under test, as real processes on this machine: a "pod" (an iperf3 server
 * and an echo server), one agent, the gateway (production-like: blocking-strict file
 * audit with fsync=always) and a second gateway whose audit is as cheap as the config
 * allows (batch, no fsync) for the audit-cost figure, and the real `pfgate port-forward`
 * CLI as the local forwarder. Every component is its own process, as in production,
 * which matters on a 2-core machine.
 *
 * The dev cluster's helpers build the PKI, the signing key, the token and the kubeconfig;
 * the pods and configs are the bench's own (the dev cluster's demo pods have no iperf3).
 *
 * @module
 */
import { fork } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify as toYaml } from 'yaml'
import { GATEWAY_IDENTITY_URI } from '../src/protocol/constants.js'
import {
  PFGATE_BIN,
  devGatewayConfig,
  ensureMaterial,
  writeKubeconfig,
} from '../src/dev/cluster.js'
import { mintToken } from '../src/dev/token.js'
import { relayNodeFlags } from '../src/shared/node-flags.js'
import { freePort, spawnTracked, stopChild, track } from './util.js'

/** The bench pod: where it lives and its container ports. */
export const BENCH_POD = {
  namespace: 'default',
  name: 'bench',
  node: 'node-a',
  iperfPort: 5201,
  echoPort: 5000,
} as const

/** Options for {@link startSystem}. */
export interface SystemOptions {
  /** Node flags for the gateway, agent and CLI processes (e.g. `--cpu-prof`). */
  nodeArgs?: string[]
  /**
   * Flags for the gateway and the agent only, before `nodeArgs`: by default those they
   * run with in the dev cluster and the container image (src/shared/node-flags.ts). The
   * CLI runs as users start it, with none.
   */
  relayFlags?: string[]
  /** Children's log level (default `error`). */
  logLevel?: string
  /** Show children's stderr (default: kept, shown only when a start fails). */
  verbose?: boolean
  /** Extra gateway config merged over the production-like one. */
  gatewayOverrides?: Record<string, unknown>
  /** Another build's `bin/pfgate.js` for the gateway, agent and CLI (A/B comparisons). */
  bin?: string
}

/** A gateway process. */
export interface GatewayProc {
  proc: ChildProcess
  port: number
  url: string
  /** The audit trail directory. */
  auditDir: string
}

/** A running system under test. */
export interface BenchSystem {
  dir: string
  kubeconfig: string
  token: string
  /** The production-like gateway (blocking-strict, fsync=always). */
  gateway: GatewayProc
  /** The same gateway with the cheapest audit (batch, fsync=never), for the audit-cost figure. */
  cheapGateway: GatewayProc
  agent: ChildProcess
  /** The pod's servers as the agent reaches them (host ports). */
  pod: { iperfPort: number; echoPort: number; iperf: ChildProcess; echo: ChildProcess }
  /** The `pfgate port-forward` CLI and its local ports. */
  cli: { proc: ChildProcess; iperfPort: number; echoPort: number }
  /** pids of the relaying processes. */
  pids(): { cli: number | undefined; gateway: number | undefined; agent: number | undefined }
  stop(): Promise<void>
}

/** Forks `pfgate ...args` with an IPC channel; resolves once it reports `listening`. */
export function forkComponent(
  name: string,
  args: string[],
  options: { cwd: string; nodeArgs?: string[]; verbose?: boolean; bin?: string },
): Promise<{ proc: ChildProcess; ports: number[] }> {
  return new Promise((resolve, reject) => {
    const proc = track(
      fork(options.bin ?? PFGATE_BIN, args, {
        cwd: options.cwd,
        execArgv: options.nodeArgs ?? [],
        stdio:
          options.verbose === true
            ? ['ignore', 'inherit', 'inherit', 'ipc']
            : ['ignore', 'ignore', 'pipe', 'ipc'],
      }),
    )
    let stderr = ''
    proc.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000)
    })
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`${name} did not start within 20 s\n${stderr}`))
    }, 20_000)
    proc.on('message', (m: { type?: string; port?: number; ports?: number[] }) => {
      if (m.type !== 'listening') return
      clearTimeout(timer)
      resolve({ proc, ports: m.ports ?? (m.port !== undefined ? [m.port] : []) })
    })
    proc.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${name} exited during start-up (${code ?? signal})\n${stderr}`))
    })
  })
}

/** Starts `iperf3 -s` on a free port; resolves once it listens. */
export async function startIperfServer(): Promise<{ proc: ChildProcess; port: number }> {
  const port = await freePort()
  const proc = spawnTracked('iperf3', ['-s', '-p', String(port), '--forceflush'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  await new Promise<void>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`iperf3 -s did not start: ${out}`)), 10_000)
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('Server listening')) {
        clearTimeout(timer)
        resolve()
      }
    })
    proc.once('error', (err) => {
      clearTimeout(timer)
      reject(new Error(`iperf3 is required (Debian package iperf3): ${err.message}`))
    })
    proc.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`iperf3 -s exited (${code}): ${out}`))
    })
  })
  // Later output (one report per test) is not needed; keep the pipe drained.
  proc.stdout?.removeAllListeners('data')
  proc.stdout?.resume()
  return { proc, port }
}

/** Starts the whole system under test in a fresh temp directory. */
export async function startSystem(options: SystemOptions = {}): Promise<BenchSystem> {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-bench-'))
  const logLevel = options.logLevel ?? 'error'
  const common = {
    cwd: dir,
    nodeArgs: options.nodeArgs ?? [],
    verbose: options.verbose === true,
    bin: options.bin ?? PFGATE_BIN,
  }
  const relay = {
    ...common,
    nodeArgs: [...(options.relayFlags ?? relayNodeFlags()), ...common.nodeArgs],
  }
  const started: ChildProcess[] = []
  const stop = async (): Promise<void> => {
    for (const p of [...started].reverse()) await stopChild(p)
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await ensureMaterial(dir)
    // 1. The pod: iperf3 and an echo server (the dev cluster's demo pod).
    const iperf = await startIperfServer()
    started.push(iperf.proc)
    const echo = await forkComponent(
      'pod:echo',
      ['demo-pod', '--kind', 'echo', '--name', 'bench', '--listen', '127.0.0.1:0'],
      { cwd: dir },
    )
    started.push(echo.proc)
    const echoPort = echo.ports[0] as number

    // 2. The agent, with a static dialer to the pod's host ports.
    const agentFile = join(dir, 'agent.yaml')
    writeFileSync(
      agentFile,
      toYaml({
        nodeName: BENCH_POD.node,
        listen: { host: '127.0.0.1', port: 0 },
        tls: {
          cert: `agent-${BENCH_POD.node}.crt`,
          key: `agent-${BENCH_POD.node}.key`,
          clientCa: 'ca.crt',
        },
        allowedClients: [GATEWAY_IDENTITY_URI],
        dialer: { type: 'static', connectTimeout: '5s' },
        pods: [
          {
            namespace: BENCH_POD.namespace,
            name: BENCH_POD.name,
            host: '127.0.0.1',
            ports: {
              [String(BENCH_POD.iperfPort)]: iperf.port,
              [String(BENCH_POD.echoPort)]: echoPort,
            },
          },
        ],
        shutdownGrace: '1s',
        logLevel,
      }),
    )
    const agent = await forkComponent('agent', ['agent', '--config', agentFile], relay)
    started.push(agent.proc)

    // 3. The registry and two gateways (strict and cheap audit).
    writeFileSync(
      join(dir, 'registry.yaml'),
      toYaml({
        nodes: [
          {
            name: BENCH_POD.node,
            address: '127.0.0.1',
            port: agent.ports[0],
            tlsServerName: BENCH_POD.node,
          },
        ],
        pods: [
          {
            namespace: BENCH_POD.namespace,
            name: BENCH_POD.name,
            node: BENCH_POD.node,
            phase: 'Running',
            ports: [
              { name: 'iperf', containerPort: BENCH_POD.iperfPort, protocol: 'TCP' },
              { name: 'echo', containerPort: BENCH_POD.echoPort, protocol: 'TCP' },
            ],
          },
        ],
      }),
    )
    const startGateway = async (name: string, audit: Record<string, unknown>) => {
      const auditDir = join(dir, `audit-${name}`)
      mkdirSync(auditDir, { recursive: true, mode: 0o700 })
      const config = {
        ...devGatewayConfig(0, '127.0.0.1', logLevel),
        metrics: null,
        audit,
        shutdownGrace: '1s',
        ...options.gatewayOverrides,
      }
      const file = join(dir, `gateway-${name}.yaml`)
      writeFileSync(file, toYaml(config))
      const gw = await forkComponent(`gateway:${name}`, ['gateway', '--config', file], relay)
      started.push(gw.proc)
      const port = gw.ports[0] as number
      return { proc: gw.proc, port, url: `https://127.0.0.1:${port}`, auditDir }
    }
    const gateway = await startGateway('strict', {
      mode: 'blocking-strict',
      sinks: [
        {
          type: 'file',
          path: 'audit-strict/audit.log',
          fsync: 'always',
          maxSize: '100MiB',
          maxFiles: 5,
        },
      ],
    })
    const cheapGateway = await startGateway('cheap', {
      mode: 'batch',
      sinks: [
        {
          type: 'file',
          path: 'audit-cheap/audit.log',
          fsync: 'never',
          maxSize: '100MiB',
          maxFiles: 5,
        },
      ],
    })

    // 4. The token, the kubeconfig and the CLI forwarding two local ports.
    const token = await mintToken(dir, {
      subject: 'bench',
      groups: ['pfgate:developers', 'pfgate:admins'],
      ttlMs: 86_400_000,
    })
    const kubeconfig = writeKubeconfig(dir, gateway.url, token)
    const cli = await startCli(kubeconfig, common)
    started.push(cli.proc)
    return {
      dir,
      kubeconfig,
      token,
      gateway,
      cheapGateway,
      agent: agent.proc,
      pod: { iperfPort: iperf.port, echoPort, iperf: iperf.proc, echo: echo.proc },
      cli,
      pids: () => ({ cli: cli.proc.pid, gateway: gateway.proc.pid, agent: agent.proc.pid }),
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/** `pfgate port-forward -q bench :5201 :5000`; resolves with the local ports. */
async function startCli(
  kubeconfig: string,
  options: { cwd: string; nodeArgs: string[]; verbose: boolean; bin: string },
): Promise<{ proc: ChildProcess; iperfPort: number; echoPort: number }> {
  const proc = spawnTracked(
    process.execPath,
    [
      ...options.nodeArgs,
      options.bin,
      'port-forward',
      '-q',
      '--kubeconfig',
      kubeconfig,
      '--address',
      '127.0.0.1',
      BENCH_POD.name,
      `:${BENCH_POD.iperfPort}`,
      `:${BENCH_POD.echoPort}`,
    ],
    { cwd: options.cwd, stdio: ['ignore', 'pipe', options.verbose ? 'inherit' : 'pipe'] },
  )
  return new Promise((resolve, reject) => {
    let out = ''
    let err = ''
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`pfgate port-forward did not start: ${out}${err}`))
    }, 20_000)
    proc.stderr?.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000)
    })
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      const local = (remote: number): number | undefined => {
        const m = new RegExp(`^Forwarding from 127\\.0\\.0\\.1:(\\d+) -> ${remote}$`, 'm').exec(out)
        return m === null ? undefined : Number(m[1])
      }
      const iperfPort = local(BENCH_POD.iperfPort)
      const echoPort = local(BENCH_POD.echoPort)
      if (iperfPort !== undefined && echoPort !== undefined) {
        clearTimeout(timer)
        resolve({ proc, iperfPort, echoPort })
      }
    })
    proc.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`pfgate port-forward exited (${code}): ${out}${err}`))
    })
  })
}
