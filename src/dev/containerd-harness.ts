/**
 * A private containerd for real pods: the dev cluster's `--runtime containerd` and the
 * tests start one per simulated node. Everything it owns lives under one temp directory
 * (root, state, socket, CNI config, IPAM data, runc state, the image archive) plus one
 * CNI bridge and one cgroup parent with names unique to the run, so parallel runs do
 * not meet, and {@link ContainerdHarness.close} removes all of it: pods, the daemon,
 * leftover shims, mounts, the bridge, the cgroups, the directory.
 *
 * Pods are made the way the kubelet makes them, over CRI: RunPodSandbox (the sandbox
 * process is the image's `sleep`, its network comes from the CNI bridge config written
 * here), then CreateContainer + StartContainer for each server, with the kubelet's
 * `io.kubernetes.pod.{uid,name,namespace}` labels on the sandbox. The image is built
 * from Debian's busybox-static (src/dev/oci-image.ts) and imported with `ctr`, since no
 * registry is reachable. Needs root, Linux, and Debian's `containerd`, `runc`,
 * `containernetworking-plugins` and `busybox-static` (the test set-up installs them).
 *
 * @module
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  CriClient,
  POD_NAMESPACE_LABEL,
  POD_NAME_LABEL,
  POD_UID_LABEL,
} from '../shared/cri/client.js'
import type { CriPodSandboxConfig } from '../shared/cri/client.js'
import { sandboxNetwork } from '../shared/cri/sandbox-network.js'
import { BUSYBOX_STATIC, buildBusyboxImage } from './oci-image.js'

/** Where Debian's containernetworking-plugins puts the CNI plugins. */
export const CNI_BIN_DIR = '/usr/lib/cni'
/** The image name the harness imports (sandbox and servers). */
export const HARNESS_IMAGE = 'docker.io/pfgate/busybox:dev'

/** The file naming a harness's owner process and what it created outside its directory. */
const OWNER_FILE = 'harness.json'

/** `<pid> <start time>` of a live process (PID reuse cannot fake it), or undefined. */
function processIdentity(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 22 (starttime), counted after the command name's closing parenthesis.
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
    return `${pid} ${start}`
  } catch {
    return undefined
  }
}

/** Why a harness cannot start here, or undefined when it can. */
export function containerdUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not running as root'
  const missing: string[] = []
  for (const [tool, pkg] of [
    ['containerd', 'containerd'],
    ['ctr', 'containerd'],
    ['runc', 'runc'],
    ['tar', 'tar'],
  ] as const) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error !== undefined) {
      missing.push(`\`${tool}\` (Debian package ${pkg})`)
    }
  }
  for (const [path, pkg] of [
    [join(CNI_BIN_DIR, 'bridge'), 'containernetworking-plugins'],
    [join(CNI_BIN_DIR, 'host-local'), 'containernetworking-plugins'],
    [join(CNI_BIN_DIR, 'loopback'), 'containernetworking-plugins'],
    [BUSYBOX_STATIC, 'busybox-static'],
  ] as const) {
    try {
      accessSync(path, constants.X_OK)
    } catch {
      missing.push(`${path} (Debian package ${pkg})`)
    }
  }
  return missing.length > 0 ? `missing ${missing.join(', ')}` : undefined
}

/** A container of a pod: its command may use the pod's IP (known once the sandbox runs). */
export interface HarnessContainerSpec {
  name: string
  command: string[] | ((podIp: string) => string[])
}

/** What {@link ContainerdHarness.runPod} creates. */
export interface HarnessPodSpec {
  namespace: string
  name: string
  /** The pod UID (default: a new random one, as the API server would assign). */
  uid?: string
  /** Sandbox attempt (the kubelet counts up when it recreates a pod's sandbox). */
  attempt?: number
  labels?: Record<string, string>
  annotations?: Record<string, string>
  containers: HarnessContainerSpec[]
}

/** A pod the harness runs. */
export interface HarnessPod {
  spec: HarnessPodSpec
  namespace: string
  name: string
  uid: string
  sandboxId: string
  /** The pod's IPv4 address on the harness bridge. */
  ip: string
  /** The sandbox's network namespace file, as the runtime reports it. */
  netnsPath: string
  containerIds: string[]
}

/** Options of {@link ContainerdHarness.start}. */
export interface ContainerdHarnessOptions {
  /** A label for logs and names (default `node`). */
  name?: string
  /** Parent of the harness's temp directory (default the OS temp dir; keep it short: socket paths). */
  parentDir?: string
  /** containerd's log level (default `warn`); its log goes to `<dir>/containerd.log`. */
  logLevel?: string
  log?: (line: string) => void
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Runs a command; throws with its stderr. */
function run(cmd: string, args: string[], timeoutMs = 60_000): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs })
  if (r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(' ')} failed: ${r.error?.message ?? (r.stderr.trim() || `exit ${r.status}`)}`,
    )
  }
  return r.stdout
}

/** A private containerd with a CNI bridge network. */
export class ContainerdHarness {
  /** The harness's directory (everything it owns is under it). */
  readonly dir: string
  /** containerd's CRI socket. */
  readonly socketPath: string
  /** The CNI bridge (`pfg<hex>`), created by the bridge plugin with the first pod. */
  readonly bridge: string
  /** The pods' subnet. */
  readonly subnet: string
  /** The cgroup parent of the pods (`/pfgate-<hex>`). */
  readonly cgroupParent: string
  readonly imageRef = HARNESS_IMAGE
  readonly client: CriClient

  readonly #name: string
  readonly #logLevel: string
  readonly #log: (line: string) => void
  readonly #pods = new Map<string, HarnessPod>()
  #daemon: ChildProcess | undefined
  #closed = false

  private constructor(
    dir: string,
    options: ContainerdHarnessOptions,
    saved?: { bridge: string; cgroupParent: string; subnet: string },
  ) {
    this.dir = dir
    this.#name = options.name ?? 'node'
    this.#logLevel = options.logLevel ?? 'warn'
    this.#log = options.log ?? (() => undefined)
    this.socketPath = join(dir, 'containerd.sock')
    const id = randomBytes(4).toString('hex')
    this.bridge = saved?.bridge ?? `pfg${id}`
    this.cgroupParent = saved?.cgroupParent ?? `/pfgate-${id}`
    // 10.<128-255>.<0-255>.0/24: the bridge has no address on the host (isGateway false),
    // so no host route is added and two runs with the same subnet still do not meet.
    const b = randomBytes(2)
    this.subnet = saved?.subnet ?? `10.${128 + ((b[0] as number) & 127)}.${b[1] as number}.0/24`
    this.client = new CriClient(this.socketPath, { timeoutMs: 10_000 })
  }

  /**
   * Cleans up after harnesses whose process died without closing them (a test killed
   * on a timeout, a crash): each `pfgate-ctr-*` directory under `parentDir` whose owner
   * process is gone is closed like {@link close} would have. A live owner's (another
   * run's) is never touched. Returns the directories reclaimed.
   */
  static async reclaimStale(
    parentDir: string = tmpdir(),
    log: (line: string) => void = () => undefined,
  ): Promise<string[]> {
    const done: string[] = []
    for (const name of readdirSync(parentDir)) {
      if (!name.startsWith('pfgate-ctr-')) continue
      const dir = join(parentDir, name)
      let saved: { owner: string; bridge: string; cgroupParent: string; subnet: string }
      try {
        saved = JSON.parse(readFileSync(join(dir, OWNER_FILE), 'utf8')) as typeof saved
      } catch {
        continue
      }
      if (processIdentity(Number(saved.owner.split(' ')[0])) === saved.owner) continue
      log(`reclaiming ${dir}: its harness process is gone`)
      await new ContainerdHarness(dir, { name: 'stale', log }, saved).close()
      done.push(dir)
    }
    return done
  }

  /**
   * Starts containerd in a new temp directory, imports the busybox image and waits
   * until CRI answers. Throws (after cleaning up) when it cannot.
   */
  static async start(options: ContainerdHarnessOptions = {}): Promise<ContainerdHarness> {
    const why = containerdUnavailable()
    if (why !== undefined) throw new Error(`cannot run containerd here: ${why}`)
    await ContainerdHarness.reclaimStale(options.parentDir ?? tmpdir(), options.log)
    const dir = mkdtempSync(join(options.parentDir ?? tmpdir(), 'pfgate-ctr-'))
    const h = new ContainerdHarness(dir, options)
    try {
      writeFileSync(
        join(dir, OWNER_FILE),
        JSON.stringify({
          owner: processIdentity(process.pid),
          bridge: h.bridge,
          cgroupParent: h.cgroupParent,
          subnet: h.subnet,
        }),
      )
      h.#writeConfig()
      await h.startDaemon()
      const image = buildBusyboxImage(join(dir, 'image'), h.imageRef)
      run('ctr', [
        '--address',
        h.socketPath,
        '--namespace',
        'k8s.io',
        'images',
        'import',
        image.path,
      ])
      return h
    } catch (err) {
      await h.close()
      throw err
    }
  }

  /** True while the containerd process runs. */
  get running(): boolean {
    return (
      this.#daemon !== undefined &&
      this.#daemon.exitCode === null &&
      this.#daemon.signalCode === null
    )
  }

  /** containerd's process id while it runs. */
  get pid(): number | undefined {
    return this.running ? this.#daemon?.pid : undefined
  }

  /** The pods created and not removed, by UID. */
  pods(): HarnessPod[] {
    return [...this.#pods.values()]
  }

  /** Starts containerd (again) and waits until CRI answers Version and the network is ready. */
  async startDaemon(): Promise<void> {
    if (this.running) return
    const logFd = openSync(join(this.dir, 'containerd.log'), 'a', 0o600)
    let proc: ChildProcess
    try {
      proc = spawn('containerd', ['--config', join(this.dir, 'config.toml')], {
        stdio: ['ignore', logFd, logFd],
        // Its own process group, so a Ctrl-C at the dev cluster's terminal reaches us,
        // not containerd directly: the harness stops it in order.
        detached: true,
      })
    } finally {
      closeSync(logFd)
    }
    this.#daemon = proc
    const exited = new Promise<void>((r) => proc.once('exit', () => r()))
    proc.once('error', () => undefined)
    const deadline = Date.now() + 30_000
    for (;;) {
      if (!this.running) {
        await exited
        throw new Error(`containerd (${this.#name}) exited during start-up: ${this.#logTail()}`)
      }
      try {
        await this.client.version()
        return
      } catch (err) {
        if (Date.now() > deadline) {
          proc.kill('SIGKILL')
          throw new Error(
            `containerd (${this.#name}) did not answer CRI within 30 s: ${String(err)}`,
            {
              cause: err,
            },
          )
        }
        await sleep(100)
      }
    }
  }

  /** Stops containerd (SIGTERM, SIGKILL after 10 s). Pods keep running in their shims. */
  async stopDaemon(): Promise<void> {
    const p = this.#daemon
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000)
      p.once('exit', () => {
        clearTimeout(t)
        resolve()
      })
      p.kill('SIGTERM')
    })
  }

  /**
   * Runs a pod: its sandbox (with the kubelet's labels) on the bridge network, then
   * each container. Resolves once every container has started.
   */
  async runPod(spec: HarnessPodSpec): Promise<HarnessPod> {
    const uid = spec.uid ?? randomUUID()
    const config: CriPodSandboxConfig = {
      metadata: { name: spec.name, uid, namespace: spec.namespace, attempt: spec.attempt ?? 0 },
      hostname: spec.name,
      logDirectory: join(this.dir, 'logs', `${spec.namespace}_${spec.name}_${uid}`),
      labels: {
        ...spec.labels,
        [POD_NAME_LABEL]: spec.name,
        [POD_NAMESPACE_LABEL]: spec.namespace,
        [POD_UID_LABEL]: uid,
      },
      annotations: { ...spec.annotations },
      linux: {
        cgroupParent: this.cgroupParent,
        securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
      },
    }
    mkdirSync(config.logDirectory as string, { recursive: true })
    const sandboxId = await this.client.runPodSandbox(config)
    const pod: HarnessPod = {
      spec: { ...spec, uid },
      namespace: spec.namespace,
      name: spec.name,
      uid,
      sandboxId,
      ip: '',
      netnsPath: '',
      containerIds: [],
    }
    this.#pods.set(sandboxId, pod)
    const net = sandboxNetwork(await this.client.podSandboxStatus(sandboxId, true))
    pod.ip = net.podIps.find((ip) => ip.includes('.')) ?? ''
    pod.netnsPath = net.netnsPath ?? ''
    for (const c of spec.containers) {
      const command = typeof c.command === 'function' ? c.command(pod.ip) : c.command
      const id = await this.client.createContainer(
        sandboxId,
        {
          metadata: { name: c.name, attempt: 0 },
          image: { image: this.imageRef },
          command,
          logPath: `${c.name}.log`,
          labels: { 'io.kubernetes.container.name': c.name, [POD_UID_LABEL]: uid },
          linux: {
            securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
          },
        },
        config,
      )
      pod.containerIds.push(id)
      await this.client.startContainer(id)
    }
    this.#log(
      `pod ${spec.namespace}/${spec.name} (uid ${uid}) runs in ${pod.netnsPath}, ip ${pod.ip}`,
    )
    return pod
  }

  /** StopPodSandbox: containers killed, network torn down (the namespace is deleted). */
  async stopPod(pod: HarnessPod): Promise<void> {
    await this.client.stopPodSandbox(pod.sandboxId)
  }

  /** StopPodSandbox + RemovePodSandbox. */
  async removePod(pod: HarnessPod): Promise<void> {
    await this.client.stopPodSandbox(pod.sandboxId)
    await this.client.removePodSandbox(pod.sandboxId)
    this.#pods.delete(pod.sandboxId)
  }

  /**
   * Replaces a pod's sandbox as the kubelet does when a sandbox dies: the old one is
   * removed, a new one (new namespace, next attempt) is run with the same UID unless
   * `changes` gives another, and with `changes` applied.
   */
  async recreatePod(pod: HarnessPod, changes: Partial<HarnessPodSpec> = {}): Promise<HarnessPod> {
    await this.removePod(pod)
    return this.runPod({
      ...pod.spec,
      attempt: (pod.spec.attempt ?? 0) + 1,
      ...changes,
    })
  }

  /**
   * Removes everything: pods, the daemon, shims and container processes left over,
   * mounts under the directory, the bridge, the cgroups, the directory. Idempotent;
   * every step runs even when an earlier one fails.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const problems: string[] = []
    const attempt = async (what: string, fn: () => unknown): Promise<void> => {
      try {
        await fn()
      } catch (err) {
        problems.push(`${what}: ${String(err)}`)
      }
    }
    // A harness reclaimed from a dead owner may still have that owner's containerd.
    if (this.#daemon === undefined) {
      await attempt('stop an orphaned containerd', () => this.#killOrphanedDaemon())
    }
    if (existsSync(join(this.dir, 'config.toml'))) {
      // Sandboxes are removed through containerd, which tears their networks down.
      await attempt('start containerd for the clean-up', () => this.startDaemon())
      if (this.running) {
        await attempt('remove pods', async () => {
          for (const sb of await this.client.listPodSandbox()) {
            await this.client.stopPodSandbox(sb.id).catch(() => undefined)
            await this.client.removePodSandbox(sb.id)
          }
        })
      }
    }
    this.#pods.clear()
    this.client.close()
    await attempt('stop containerd', () => this.stopDaemon())
    await attempt('kill leftover processes', () => this.#killLeftovers())
    await attempt('unmount', () => this.#unmountAll())
    await attempt('delete the bridge', () => {
      if (existsSync(`/sys/class/net/${this.bridge}`)) run('ip', ['link', 'del', this.bridge])
    })
    await attempt('remove cgroups', () => this.#removeCgroups())
    await attempt('remove the directory', () => rmSync(this.dir, { recursive: true, force: true }))
    if (problems.length > 0) this.#log(`containerd harness clean-up: ${problems.join('; ')}`)
  }

  #writeConfig(): void {
    const d = this.dir
    for (const sub of ['root', 'state', 'cni', 'cni-ipam', 'runc', 'opt', 'logs']) {
      mkdirSync(join(d, sub), { recursive: true, mode: 0o700 })
    }
    writeFileSync(
      join(d, 'cni', '10-pfgate.conflist'),
      JSON.stringify(
        {
          cniVersion: '1.0.0',
          name: `pfgate-${this.bridge}`,
          plugins: [
            {
              type: 'bridge',
              bridge: this.bridge,
              isGateway: false,
              ipMasq: false,
              hairpinMode: false,
              ipam: {
                type: 'host-local',
                ranges: [[{ subnet: this.subnet }]],
                dataDir: join(d, 'cni-ipam'),
              },
            },
          ],
        },
        null,
        2,
      ),
    )
    const q = (s: string): string => JSON.stringify(s)
    const cri = 'plugins."io.containerd.grpc.v1.cri"'
    writeFileSync(
      join(d, 'config.toml'),
      [
        'version = 2',
        `root = ${q(join(d, 'root'))}`,
        `state = ${q(join(d, 'state'))}`,
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
        '[grpc]',
        `  address = ${q(this.socketPath)}`,
        '[ttrpc]',
        `  address = ${q(`${this.socketPath}.ttrpc`)}`,
        '[debug]',
        `  level = ${q(this.#logLevel)}`,
        '[metrics]',
        '  address = ""',
        `[${cri}]`,
        `  sandbox_image = ${q(this.imageRef)}`,
        // Namespaces under our state dir, not /var/run/netns: nothing shared with the host's.
        '  netns_mounts_under_state_dir = true',
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        '  disable_apparmor = true',
        '  restrict_oom_score_adj = true',
        `[${cri}.containerd]`,
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        `[${cri}.containerd.runtimes.runc]`,
        '  runtime_type = "io.containerd.runc.v2"',
        `[${cri}.containerd.runtimes.runc.options]`,
        `  Root = ${q(join(d, 'runc'))}`,
        '  SystemdCgroup = false',
        `[${cri}.cni]`,
        `  bin_dir = ${q(CNI_BIN_DIR)}`,
        `  conf_dir = ${q(join(d, 'cni'))}`,
        '  max_conf_num = 1',
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = ${q(join(d, 'opt'))}`,
        '',
      ].join('\n'),
    )
  }

  #logTail(): string {
    try {
      return readFileSync(join(this.dir, 'containerd.log'), 'utf8')
        .trim()
        .split('\n')
        .slice(-5)
        .join(' | ')
    } catch {
      return '(no log)'
    }
  }

  /** The pids of processes whose command line has `arg` (exactly) after `flag`. */
  #pidsWith(flag: string, arg: string): number[] {
    const out: number[] = []
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
        const i = args.indexOf(flag)
        if (i >= 0 && args[i + 1] === arg) out.push(Number(pid))
      } catch {
        // gone meanwhile
      }
    }
    return out
  }

  /** SIGKILLs a containerd left running on our config, and waits until it is gone. */
  async #killOrphanedDaemon(): Promise<void> {
    const pids = this.#pidsWith('--config', join(this.dir, 'config.toml'))
    for (const pid of pids) process.kill(pid, 'SIGKILL')
    const deadline = Date.now() + 10_000
    while (pids.some((p) => existsSync(`/proc/${p}`)) && Date.now() < deadline) await sleep(50)
  }

  /** Shims started for our socket, and containers left in our runc root (only ours). */
  #killLeftovers(): void {
    for (const pid of this.#pidsWith('-address', this.socketPath)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    const runcRoot = join(this.dir, 'runc', 'k8s.io')
    if (!existsSync(runcRoot)) return
    for (const id of readdirSync(runcRoot)) {
      spawnSync('runc', ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore' })
    }
  }

  /** Unmounts every mount point under the directory, deepest first. */
  #unmountAll(): void {
    const unescape = (s: string): string =>
      s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
    const points = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => unescape(l.split(' ')[4] ?? ''))
      .filter((p) => p === this.dir || p.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length)
    for (const p of points) {
      spawnSync('umount', ['-l', p], { stdio: 'ignore' })
    }
  }

  /** rmdir of our cgroup parent in every hierarchy, children first. */
  #removeCgroups(): void {
    const base = '/sys/fs/cgroup'
    const name = this.cgroupParent.slice(1)
    const roots = existsSync(join(base, 'cgroup.controllers'))
      ? [base]
      : readdirSync(base).map((c) => join(base, c))
    const rmTree = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) rmTree(join(dir, e.name))
      }
      rmdirSync(dir)
    }
    for (const root of roots) {
      const dir = join(root, name)
      if (existsSync(dir)) rmTree(dir)
    }
  }
}

/** Runs `fn` with a harness and always closes it (for scripts and one-off checks). */
export async function withContainerd<T>(
  options: ContainerdHarnessOptions,
  fn: (h: ContainerdHarness) => Promise<T>,
): Promise<T> {
  const h = await ContainerdHarness.start(options)
  try {
    return await fn(h)
  } finally {
    await h.close()
  }
}

/** Exposed for tests: runs a command in a pod's network namespace and returns stdout. */
export function execInNetns(netnsPath: string, command: string[]): string {
  return execFileSync('nsenter', [`--net=${netnsPath}`, '--', ...command], { encoding: 'utf8' })
}
