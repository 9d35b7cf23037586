#!/usr/bin/env node
// Prepares this machine for `npm test`: installs the system tools the tests drive
// (Debian packages, as root) and unpacks the extra kubectl build. It runs first in
// `npm test`, so a newcomer's `npm test` on a fresh Debian machine installs what the
// tests need; on a machine that has everything it returns at once.
//
// Each requirement says why it is needed; add one here when a test needs a new tool.
// Not root, or no apt-get: it prints what is missing and why, loudly, and the tests
// that need it then fail with their own message (they never skip).
//
// Usage: node scripts/test-setup.mjs [--check]   (--check: report only, install nothing)
import { spawnSync } from 'node:child_process'
import {
  accessSync,
  chmodSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Debian packages the tests (and `npm run bench`) use, each with what needs it. */
export const DEBIAN_PACKAGES = [
  { pkg: 'socat', why: 'the reference relay chain and the nsenter+socat baseline' },
  { pkg: 'iproute2', why: '`ip netns`: real network namespaces for pods' },
  { pkg: 'util-linux', why: 'nsenter: entering pod network namespaces' },
  { pkg: 'procps', why: 'process inspection in the leak checks' },
  { pkg: 'python3-kubernetes', why: 'the Python Kubernetes client (WebSocket channels)' },
  { pkg: 'iperf3', why: 'the throughput driver of `npm run bench`' },
  { pkg: 'linux-perf', why: '`npm run bench -- --profile`: system calls counted per process' },
  { pkg: 'containerd', why: 'real pods: the agent finds them over CRI (containerd harness)' },
  { pkg: 'runc', why: 'the OCI runtime containerd runs the harness pods with' },
  { pkg: 'containernetworking-plugins', why: 'CNI bridge network of the harness pods' },
  { pkg: 'busybox-static', why: 'the image of the harness pods (sandbox and servers)' },
  { pkg: 'bind9-dnsutils', why: '`dig`: a real DNS client through UDP forwards' },
  { pkg: 'haproxy', why: 'the load balancer (TCP mode) in front of gateway replicas' },
  { pkg: 'nftables', why: 'agents in namespaces that the gateways cannot dial (reverse mode)' },
  { pkg: 'chromium', why: 'the admin console tests in a real browser (driven by playwright-core)' },
]

/** Where Debian's kubectl 1.20 (kubernetes-client) is unpacked: beside, not over, the PATH kubectl. */
export const KUBECTL_120_DIR = '/opt/kubectl-1.20'
export const KUBECTL_120 = join(KUBECTL_120_DIR, 'usr/bin/kubectl')

/** Wait for another apt/dpkg run to finish instead of failing at once. */
const APT_LOCK = ['-o', 'DPkg::Lock::Timeout=600']

const checkOnly = process.argv.includes('--check')

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts })
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})`)
  }
}

function installed(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' })
  return r.status === 0 && r.stdout.includes('install ok installed')
}

function executable(path) {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

function loud(lines) {
  const bar = '!'.repeat(78)
  console.error([bar, ...lines.map((l) => `! ${l}`), bar].join('\n'))
}

const missing = DEBIAN_PACKAGES.filter((p) => !installed(p.pkg))
const needKubectl = !executable(KUBECTL_120)
if (missing.length === 0 && !needKubectl) process.exit(0)

const problems = [
  ...missing.map((p) => `Debian package ${p.pkg} (${p.why})`),
  ...(needKubectl ? [`kubectl 1.20 at ${KUBECTL_120} (Debian's kubernetes-client, unpacked)`] : []),
]
const isRoot = process.getuid?.() === 0
const hasApt = spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0
if (checkOnly || !isRoot || !hasApt) {
  loud([
    'test-setup: missing what some tests need; those tests will fail:',
    ...problems.map((p) => `  - ${p}`),
    checkOnly
      ? 'run `node scripts/test-setup.mjs` as root to install them'
      : `cannot install here (${!isRoot ? 'not root' : 'no apt-get'}): install them, or run npm test as root`,
  ])
  process.exit(0)
}

console.error(`test-setup: installing ${problems.length} missing item(s):`)
for (const p of problems) console.error(`  - ${p}`)
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
try {
  run('apt-get', [...APT_LOCK, 'update', '-qq'], { env })
  if (missing.length > 0) {
    run(
      'apt-get',
      [
        ...APT_LOCK,
        'install',
        '-y',
        '-qq',
        '--no-install-recommends',
        ...missing.map((p) => p.pkg),
      ],
      { env },
    )
  }
  if (needKubectl) {
    // Its /usr/bin/kubectl would replace the machine's kubectl (a dispatcher over several
    // builds), so the package is unpacked into its own directory instead of installed.
    const tmp = mkdtempSync(join(tmpdir(), 'pfgate-setup-'))
    chmodSync(tmp, 0o777) // apt's sandbox user writes the download here
    try {
      run('apt-get', [...APT_LOCK, 'download', 'kubernetes-client'], { cwd: tmp, env })
      const deb = readdirSync(tmp).find((f) => f.startsWith('kubernetes-client_'))
      if (deb === undefined) throw new Error('apt-get download kubernetes-client gave no .deb')
      mkdirSync(KUBECTL_120_DIR, { recursive: true })
      run('dpkg-deb', ['-x', join(tmp, deb), KUBECTL_120_DIR])
    } finally {
      rmSync(tmp, { recursive: true, force: true })
    }
  }
} catch (err) {
  loud([`test-setup: installation failed: ${err.message}`, 'the tests that need it will fail'])
  process.exit(0)
}
console.error('test-setup: done')
