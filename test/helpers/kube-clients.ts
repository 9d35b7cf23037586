/**
 * Test helpers for the Kubernetes clients against a running dev cluster: finding the
 * kubectl builds (a missing one throws, never skips), running `kubectl port-forward`
 * with a private HOME, pushing bytes through a forwarded port, the gateway's audit
 * trail, raw upgrades, and rewriting the static registry.
 *
 * Used by test/e2e/kubectl.test.ts, python-client.test.ts, protocol-fuzz.test.ts and
 * bench/kubectl.ts.
 */
import { spawn } from 'node:child_process'
import type { ChildProcessWithoutNullStreams } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { accessSync, constants, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import type { IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { createServer, connect as netConnect } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import { parse as parseYaml, stringify as toYaml } from 'yaml'
import { deniedTrailPath, isAuditRecord } from '../../src/protocol/audit-record.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { eventually } from './net.js'

/** Where each kubectl build is looked for: `$ENV`, then the listed paths. */
export const KUBECTL_BUILDS: Record<string, { env: string; paths: string[] }> = {
  '1.33': { env: 'PFGATE_KUBECTL_1_33', paths: ['/usr/lib/google-cloud-sdk/bin/kubectl.1.33'] },
  '1.32': { env: 'PFGATE_KUBECTL_1_32', paths: ['/usr/lib/google-cloud-sdk/bin/kubectl.1.32'] },
  '1.28': { env: 'PFGATE_KUBECTL_1_28', paths: ['/usr/lib/google-cloud-sdk/bin/kubectl.1.28'] },
  '1.20': { env: 'PFGATE_KUBECTL_1_20', paths: ['/opt/kubectl-1.20/usr/bin/kubectl'] },
  /** The `kubectl` users have on PATH: gcloud's dispatcher, which picks a build from /version. */
  dispatcher: {
    env: 'PFGATE_KUBECTL',
    paths: ['/usr/bin/kubectl', '/usr/lib/google-cloud-sdk/bin/kubectl'],
  },
}

/** The path of a kubectl build, or throws saying what is missing (tests fail, never skip). */
export function kubectlPath(version: string): string {
  const spec = KUBECTL_BUILDS[version]
  if (spec === undefined) throw new RangeError(`no kubectl build ${version} is known`)
  const candidates = [process.env[spec.env], ...spec.paths].filter(
    (p): p is string => p !== undefined && p !== '',
  )
  for (const p of candidates) {
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // try the next one
    }
  }
  throw new Error(
    `kubectl ${version} not found: set ${spec.env} or install it at ${spec.paths.join(' or ')}`,
  )
}

/** A running `kubectl port-forward`. */
export interface KubectlForward {
  proc: ChildProcessWithoutNullStreams
  /** Remote port (as printed) → local IPv4 port, in the printed order. */
  local: { remote: number; port: number }[]
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code (-1 when killed by a signal). */
  exited: Promise<number>
  /** SIGINT, then the exit code. */
  stop(): Promise<number>
}

/** Options for {@link runKubectl}. */
export interface KubectlRunOptions {
  kubeconfig: string
  /** A private HOME (kubectl's discovery cache lives there). */
  home: string
  env?: NodeJS.ProcessEnv
  /** Pass the kubeconfig as `KUBECONFIG` instead of `--kubeconfig`. */
  kubeconfigEnv?: boolean
}

/** Spawns kubectl with a private HOME and the given kubeconfig. */
export function spawnKubectl(
  version: string,
  args: string[],
  options: KubectlRunOptions,
): ChildProcessWithoutNullStreams {
  const viaEnv = options.kubeconfigEnv === true
  return spawn(
    kubectlPath(version),
    viaEnv ? args : ['--kubeconfig', options.kubeconfig, ...args],
    {
      env: {
        HOME: options.home,
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...(viaEnv ? { KUBECONFIG: options.kubeconfig } : {}),
        ...options.env,
      },
      stdio: 'pipe',
    },
  )
}

/** Runs kubectl to its end; kills it after `timeoutMs`. */
export async function runKubectl(
  version: string,
  args: string[],
  options: KubectlRunOptions & { timeoutMs?: number },
): Promise<{ code: number; stdout: string; stderr: string }> {
  await mkdir(options.home, { recursive: true })
  const proc = spawnKubectl(version, args, options)
  let out = ''
  let err = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const timer = setTimeout(() => proc.kill('SIGKILL'), options.timeoutMs ?? 30_000)
  const [code] = (await once(proc, 'exit')) as [number | null]
  clearTimeout(timer)
  return { code: code ?? -1, stdout: out, stderr: err }
}

/**
 * Starts `kubectl port-forward ARGS...` and waits for one "Forwarding from 127.0.0.1"
 * line per remote port (`expectPorts`). Rejects with kubectl's output if it exits first.
 */
export async function startKubectlForward(
  version: string,
  args: string[],
  expectPorts: number,
  options: KubectlRunOptions & { timeoutMs?: number },
): Promise<KubectlForward> {
  await mkdir(options.home, { recursive: true })
  const proc = spawnKubectl(version, ['port-forward', ...args], options)
  let out = ''
  let err = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number>((resolve) => proc.once('exit', (code) => resolve(code ?? -1)))
  const local: KubectlForward['local'] = []
  const deadline = Date.now() + (options.timeoutMs ?? 30_000)
  while (local.length < expectPorts) {
    local.length = 0
    for (const m of out.matchAll(/Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)/g)) {
      local.push({ port: Number(m[1]), remote: Number(m[2]) })
    }
    if (local.length >= expectPorts) break
    if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL')
      throw new Error(
        `kubectl ${version} did not start forwarding.\nstdout: ${out}\nstderr: ${err}`,
      )
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  return {
    proc,
    local,
    stdout: () => out,
    stderr: () => err,
    exited,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGINT')
      return exited
    },
  }
}

/** sha256, hex. */
export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** What went through one connection. */
export interface TransferResult {
  sentSha: string
  gotSha: string
  gotBytes: number
  ms: number
}

/**
 * Sends `size` random bytes through a local port, half-closes, and reads the echo to
 * EOF. The echo pod hashes nothing, so an equal sha256 back proves both directions.
 */
export async function echoThrough(
  port: number,
  size: number,
  timeoutMs = 60_000,
): Promise<TransferResult> {
  const data = randomBytes(size)
  const t0 = performance.now()
  const sock = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true })
  await once(sock, 'connect')
  return new Promise((resolve, reject) => {
    const h = createHash('sha256')
    let gotBytes = 0
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error(`echo of ${size} bytes timed out after ${timeoutMs} ms (${gotBytes} back)`))
    }, timeoutMs)
    sock.on('data', (d: Buffer) => {
      h.update(d)
      gotBytes += d.length
    })
    sock.once('end', () => {
      clearTimeout(timer)
      sock.end()
      resolve({
        sentSha: sha256(data),
        gotSha: h.digest('hex'),
        gotBytes,
        ms: performance.now() - t0,
      })
    })
    sock.once('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    sock.end(data)
  })
}

/**
 * Connects to a forwarded port whose pod port refuses, writes a little, and waits for
 * kubectl to close the local connection. Resolves with how it closed.
 */
export async function refusedThrough(port: number, timeoutMs = 30_000): Promise<string> {
  const sock: Socket = netConnect({ port, host: '127.0.0.1' })
  let how = 'closed'
  sock.on('error', (e: NodeJS.ErrnoException) => (how = e.code ?? e.message))
  // Not events.once: it rejects on 'error', and kubectl may well reset the connection
  // (it closes with our unread bytes in its buffer).
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()))
  await once(sock, 'connect')
  sock.write('hello?')
  sock.resume()
  const timer = setTimeout(
    () => sock.destroy(new Error('kubectl never closed the connection')),
    timeoutMs,
  )
  await closed
  clearTimeout(timer)
  return how
}

/** A TCP port on 127.0.0.1 where nothing listens. */
export async function closedPort(): Promise<number> {
  const s = createServer()
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  const { port } = s.address() as AddressInfo
  s.close()
  await once(s, 'close')
  return port
}

/**
 * Every record of the gateway's audit trail (`<dir>/audit/audit.log` and the denials trail
 * beside it, merged by time; live files only).
 */
export function readAudit(dir: string): AuditRecord[] {
  const main = join(dir, 'audit', 'audit.log')
  const [a, b] = [main, deniedTrailPath(main)].map((file) => {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      return []
    }
    const out: AuditRecord[] = []
    for (const line of text.split('\n')) {
      if (line === '') continue
      try {
        const v: unknown = JSON.parse(line)
        if (isAuditRecord(v)) out.push(v)
      } catch {
        // a line being written
      }
    }
    return out
  }) as [AuditRecord[], AuditRecord[]]
  // Merge (each file is in the order written; on a tie the main trail first).
  const out: AuditRecord[] = []
  let i = 0
  let j = 0
  while (i < a.length || j < b.length) {
    if (
      j >= b.length ||
      (i < a.length && !((a[i] as AuditRecord).time > (b[j] as AuditRecord).time))
    )
      out.push(a[i++] as AuditRecord)
    else out.push(b[j++] as AuditRecord)
  }
  return out
}

/** One pod entry of the static registry file. */
export interface RegistryPod {
  namespace: string
  name: string
  node: string
  phase?: string
  ports?: { name?: string; containerPort: number; protocol?: string }[]
  [k: string]: unknown
}

/** Rewrites `<dir>/registry.yaml` (the gateway reloads it within about a second). */
export function updateRegistry(dir: string, edit: (pods: RegistryPod[]) => RegistryPod[]): void {
  const file = join(dir, 'registry.yaml')
  const doc = parseYaml(readFileSync(file, 'utf8')) as { nodes: unknown[]; pods: RegistryPod[] }
  doc.pods = edit(doc.pods)
  // Replaced by rename, as the README asks of editors: the gateway polls the file and
  // must never read it half written (a partial file can still parse, without its services).
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, toYaml(doc))
  renameSync(tmp, file)
}

/**
 * Adds `pods` to a dev cluster's registry file and waits until the gateway serves
 * `default/<visible>` (one of them the dev user may read) to the dev token.
 */
export async function addPods(
  cluster: Pick<DevCluster, 'dir' | 'gatewayUrl' | 'token'>,
  pods: RegistryPod[],
  visible: string,
): Promise<void> {
  updateRegistry(cluster.dir, (existing) => [...existing, ...pods])
  await until(
    async () =>
      (
        await gatewayGet(
          cluster.gatewayUrl,
          cluster.dir,
          `/api/v1/namespaces/default/pods/${visible}`,
          cluster.token,
        )
      ).status === 200,
    'the gateway to reload its registry',
  )
}

/** A plain HTTPS request to the gateway (HTTP/1.1), trusting the dev CA. */
export function gatewayGet(
  url: string,
  dir: string,
  path: string,
  token: string,
): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      new URL(path, url),
      {
        ca: readFileSync(join(dir, 'ca.crt')),
        headers: { authorization: `Bearer ${token}` },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            headers: res.headers,
          }),
        )
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/** {@link eventually} with the description first (the order these tests read best in). */
export function until(
  fn: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  return eventually(fn, timeoutMs, what)
}
