/**
 * docker compose cannot run on these machines, so this checks docker-compose.yml
 * against the repository instead: every command is a real pfgate subcommand whose
 * arguments parse, every config file it names exists (through its volume mounts)
 * and validates, and every address and port agrees across compose, the gateway,
 * agent and registry configs, and the demo pods.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { COMMANDS } from '../../src/main.js'
import { loadAgentConfig } from '../../src/agent/config.js'
import { loadGatewayConfig } from '../../src/gateway/config.js'
import { parseRegistry } from '../../src/gateway/registry/static-registry.js'
import { readYamlFile } from '../../src/shared/config.js'
import { DEMO_PODS, DEV_NODES } from '../../src/dev/cluster.js'
import { RELAY_NODE_FLAGS } from '../../src/shared/node-flags.js'

const root = fileURLToPath(new URL('../../../', import.meta.url))

interface Service {
  healthcheck?: { test?: string[]; interval?: string; timeout?: string; retries?: number }
  build?: string
  image?: string
  command?: string[]
  volumes?: string[]
  ports?: string[]
  expose?: string[]
  depends_on?: Record<string, { condition: string }>
}
const compose = parseYaml(readFileSync(join(root, 'docker-compose.yml'), 'utf8'), {
  merge: true,
}) as {
  services: Record<string, Service>
  volumes: Record<string, unknown>
}
const services = compose.services
/** The load balancer in front of the gateway replicas. */
const LB = 'lb'
const GATEWAYS = ['gateway', 'gateway-2'] as const

/** Maps a container path to a repository path through the service's bind mounts (undefined for named volumes). */
function hostPath(svc: Service, containerPath: string): string | undefined {
  for (const v of svc.volumes ?? []) {
    const [src, dst] = v.split(':') as [string, string]
    if (containerPath === dst || containerPath.startsWith(dst + '/')) {
      if (!src.startsWith('.')) return undefined // a named volume: created at run time
      return join(root, src, containerPath.slice(dst.length))
    }
  }
  throw new Error(`${containerPath} is not mounted into the service`)
}

function flag(cmd: string[], name: string): string | undefined {
  const i = cmd.indexOf(name)
  return i >= 0 ? cmd[i + 1] : undefined
}

test('every service runs the image built from this repository with a real subcommand', () => {
  assert.ok(existsSync(join(root, 'Dockerfile')))
  const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8')
  // The relaying components run with the flags the dev cluster gives them.
  const entry = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)
  assert.ok(entry, 'the Dockerfile has an exec-form ENTRYPOINT')
  assert.deepEqual(JSON.parse(entry[1]!), [
    'node',
    ...RELAY_NODE_FLAGS,
    '/opt/pfgate/bin/pfgate.js',
  ])
  assert.ok(existsSync(join(root, 'bin', 'pfgate.js')))
  for (const [name, svc] of Object.entries(services)) {
    if (name === LB) continue // HAProxy's image (checked below)
    assert.equal(svc.build, '.', `${name} builds the repository`)
    assert.ok(Array.isArray(svc.command) && svc.command.length > 0, `${name} has a command`)
    const sub = svc.command[0] as string
    assert.ok((COMMANDS as readonly string[]).includes(sub), `${name}: unknown subcommand ${sub}`)
  }
  for (const v of Object.values(services).flatMap((s) => s.volumes ?? [])) {
    const src = v.split(':')[0] as string
    if (src.startsWith('.')) assert.ok(existsSync(join(root, src)), `bind mount ${src} exists`)
    else assert.ok(src in compose.volumes, `named volume ${src} is declared`)
  }
})

test('the load balancer passes the TLS port through to every gateway replica, which are peers', () => {
  const lb = services[LB] as Service
  assert.match(lb.image ?? '', /^haproxy:/)
  const cfgFile = hostPath(lb, '/usr/local/etc/haproxy/haproxy.cfg') as string
  const text = readFileSync(cfgFile, 'utf8')
  assert.match(text, /^\s*mode tcp$/m, 'TCP mode: TLS passes through')
  const gw = loadGatewayConfig(
    hostPath(
      services.gateway as Service,
      flag(services.gateway?.command as string[], '--config') as string,
    ) as string,
  )
  assert.ok(lb.ports?.includes(`${gw.listen.port}:${gw.listen.port}`), 'the LB publishes 8443')
  assert.match(text, new RegExp(`^\\s*bind :${gw.listen.port}$`, 'm'))
  for (const name of GATEWAYS) {
    const svc = services[name] as Service
    assert.match(text, new RegExp(`server ${name} ${name}:${gw.listen.port} check`))
    assert.ok(svc.expose?.includes(String(gw.listen.port)), `${name} exposes its TLS port`)
    assert.equal(lb.depends_on?.[name]?.condition, 'service_healthy')
    assert.ok(gw.peers?.urls.includes(`https://${name}:${gw.listen.port}`), `${name} is a peer`)
  }
  // Each replica keeps its own trail.
  const trails = GATEWAYS.map((n) =>
    services[n]?.volumes?.find((v) => v.endsWith(':/var/log/pfgate')),
  )
  assert.equal(new Set(trails).size, GATEWAYS.length)
})

test('the gateway config validates and agrees with compose and the registry', () => {
  const gw = services.gateway as Service
  const file = hostPath(gw, flag(gw.command as string[], '--config') as string) as string
  assert.ok(existsSync(file), relative(root, file))
  const cfg = loadGatewayConfig(file)
  // Published ports are the configured ones.
  assert.ok(
    cfg.metrics !== null && gw.ports?.includes(`127.0.0.1:${cfg.metrics.port}:${cfg.metrics.port}`),
    'metrics port published, on the loopback interface only (plain HTTP, no authentication)',
  )
  assert.equal(cfg.listen.host, '0.0.0.0', 'reachable from outside the container')
  // TLS material lives on the certs volume that the certs service fills.
  for (const p of [cfg.tls.cert, cfg.tls.key, cfg.agents.ca, cfg.agents.cert, cfg.agents.key]) {
    assert.ok(p.startsWith('/etc/pfgate/certs/'), p)
    assert.equal(hostPath(gw, p), undefined, `${p} comes from the certs volume`)
  }
  assert.equal(flag(services.certs?.command as string[], '--dir'), '/etc/pfgate/certs')
  assert.ok(cfg.registry.source === 'static')
  const regFile = hostPath(gw, cfg.registry.file) as string
  const registry = parseRegistry(readYamlFile(regFile), regFile)
  // Every node's agent is a compose service listening where the registry says.
  for (const node of registry.nodes) {
    const agent = services[node.address]
    assert.ok(agent !== undefined, `node ${node.name}: no service "${node.address}"`)
    const agentFile = hostPath(
      agent,
      flag(agent.command as string[], '--config') as string,
    ) as string
    const ac = loadAgentConfig(agentFile)
    assert.equal(ac.nodeName, node.name)
    assert.equal(ac.listen?.port, node.port, `${node.name}: agent port`)
    assert.ok(agent.expose?.includes(String(node.port)))
    assert.ok(gw.depends_on?.[node.address] !== undefined, `gateway waits for ${node.address}`)
    // The agent's certificate is issued for the name the gateway verifies.
    assert.ok(ac.tls.cert.endsWith(`agent-${node.name}.crt`))
    assert.equal(node.tlsServerName, node.name)
  }
  // Every pod runs on a node whose agent knows how to reach it, on a port its container serves.
  for (const pod of registry.pods) {
    const node = registry.nodes.find((n) => n.name === pod.nodeName)
    assert.ok(node !== undefined, `pod ${pod.name}: unknown node ${pod.nodeName}`)
    const agent = services[node.address] as Service
    const ac = loadAgentConfig(
      hostPath(agent, flag(agent.command as string[], '--config') as string) as string,
    )
    const entry = ac.pods.find((p) => p.namespace === pod.namespace && p.name === pod.name)
    assert.ok(entry !== undefined, `agent ${node.name} does not know pod ${pod.name}`)
    const podSvc = services[entry.host as string]
    assert.ok(podSvc !== undefined, `pod ${pod.name}: no service "${entry.host}"`)
    const listens = (podSvc.command as string[])
      .map((a, i, all) => (all[i - 1] === '--listen' ? Number(a.split(':').pop()) : undefined))
      .filter((x): x is number => x !== undefined)
    for (const port of pod.ports) {
      const hostPort = entry.ports?.[String(port.containerPort)] ?? port.containerPort
      assert.ok(
        listens.includes(hostPort),
        `${pod.name}:${port.containerPort} -> ${entry.host}:${hostPort} is served`,
      )
      assert.ok(podSvc.expose?.includes(String(hostPort)))
    }
  }
})

test('compose runs the same topology as the dev cluster', () => {
  const regFile = join(root, 'config', 'registry.yaml')
  const registry = parseRegistry(readYamlFile(regFile), regFile)
  assert.deepEqual(
    registry.nodes.map((n) => n.name),
    [...DEV_NODES],
  )
  assert.deepEqual(
    registry.pods.map((p) => [
      p.namespace,
      p.name,
      p.nodeName,
      p.ports.map((x) => x.containerPort),
    ]),
    DEMO_PODS.map((p) => [p.namespace, p.name, p.node, p.ports.map((x) => x.containerPort)]),
  )
})

/** The ports a service's process listens on, from its command and config. */
function servedPorts(svc: Service): number[] {
  const cmd = svc.command as string[]
  if (cmd[0] === 'demo-pod') {
    return cmd.filter((_, i) => cmd[i - 1] === '--listen').map((a) => Number(a.split(':').pop()))
  }
  const file = hostPath(svc, flag(cmd, '--config') as string) as string
  if (cmd[0] === 'agent') return [loadAgentConfig(file).listen?.port ?? 0]
  if (cmd[0] === 'gateway') return [loadGatewayConfig(file).listen.port]
  return []
}

test('every long-running service has a health check on what it serves; dependants wait for it', () => {
  const probe = ['CMD', 'node', '/opt/pfgate/bin/healthcheck.js']
  assert.ok(existsSync(join(root, 'bin', 'healthcheck.js')), 'the probe is in bin/ (in the image)')
  for (const [name, svc] of Object.entries(services)) {
    if (name === 'certs') {
      assert.equal(svc.healthcheck, undefined, 'the one-shot certs service needs none')
      continue
    }
    if (name === LB) {
      // HAProxy's image has no node: a TCP connect to the port it serves, from bash.
      assert.deepEqual(svc.healthcheck?.test, [
        'CMD',
        'bash',
        '-c',
        `exec 3<>/dev/tcp/127.0.0.1/${svc.ports?.[0]?.split(':')[0]}`,
      ])
      continue
    }
    const t = svc.healthcheck?.test
    assert.ok(Array.isArray(t), `${name} has a health check`)
    assert.deepEqual(t.slice(0, 3), probe, `${name}: exec form, the image's probe`)
    assert.ok(svc.healthcheck?.interval !== undefined && svc.healthcheck.timeout !== undefined)
    const served = servedPorts(svc)
    if (t[3] === 'tcp') {
      assert.ok(
        served.includes(Number(t[4])),
        `${name} probes port ${t[4]}, serves ${served.join(', ')}`,
      )
    } else {
      assert.equal(t[3], 'https', name)
      const url = new URL(t[4] as string)
      assert.ok((GATEWAYS as readonly string[]).includes(name), name)
      assert.equal(url.pathname, '/readyz')
      assert.ok(served.includes(Number(url.port)), `${name} probes port ${url.port}`)
      // Verified with the development CA, on the certs volume the certs service fills, for a
      // name the gateway's certificate carries (src/dev/cluster.ts issues it for localhost).
      assert.equal(url.hostname, 'localhost')
      assert.equal(t[5], '/etc/pfgate/certs/ca.crt')
      assert.equal(hostPath(svc, t[5]), undefined, 'from the certs volume')
    }
  }
  for (const [name, svc] of Object.entries(services)) {
    for (const [dep, { condition }] of Object.entries(svc.depends_on ?? {})) {
      const expected =
        services[dep]?.healthcheck !== undefined
          ? 'service_healthy'
          : 'service_completed_successfully'
      assert.equal(condition, expected, `${name} waits for ${dep}`)
    }
  }
})

test("only the load balancer's TLS port is published on every interface", () => {
  for (const [name, svc] of Object.entries(services)) {
    for (const p of svc.ports ?? []) {
      if (name === LB && p === '8443:8443') continue
      assert.match(p, /^127\.0\.0\.1:/, `${name} publishes ${p} on all interfaces`)
    }
  }
})

test('the image: built in a stage of its own, runs as a non-root user, ships no tests or benchmarks', () => {
  const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ')
  const lines = dockerfile.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'))
  const froms = lines.flatMap((l, i) => (/^FROM /.test(l) ? [i] : []))
  assert.ok(froms.length >= 2, 'a build stage and the image')
  const image = lines.slice(froms[froms.length - 1])
  const copies = image.filter((l) => /^(COPY|ADD) /.test(l))
  for (const c of copies) {
    // Sources only (flags and the destination left out), relative to the build's WORKDIR.
    const sources = c
      .split(/\s+/)
      .slice(1, -1)
      .filter((a) => !a.startsWith('--'))
      .map((a) => a.replace(/^\/opt\/pfgate\//, '').replace(/^\.\//, ''))
    for (const src of sources) {
      assert.ok(
        !['.', 'src', 'test', 'bench', 'dist', 'dist/test', 'dist/bench'].includes(src),
        `the image copies ${src}: ${c}`,
      )
    }
  }
  assert.ok(
    copies.some((c) => /--from=\w+ \S*dist\/src /.test(c)),
    'the image takes the compiled sources from the build stage',
  )
  const users = image.filter((l) => /^USER /.test(l))
  assert.equal(users.length, 1, 'one USER in the image stage')
  const user = (users[0] as string).slice(5).trim()
  assert.ok(!['root', '0', '0:0'].includes(user), `runs as ${user}`)
  const at = (re: RegExp): number => image.findIndex((l) => re.test(l))
  assert.ok(at(/^USER /) < at(/^ENTRYPOINT /), 'USER comes before the ENTRYPOINT')
  // What the unprivileged user writes: the certs volume (the certs service) and the audit
  // volume (the gateway's trail). Docker seeds new named volumes with the image's ownership.
  for (const dir of ['/etc/pfgate/certs', '/var/log/pfgate']) {
    assert.ok(
      image.some((l) => /^RUN /.test(l) && l.includes('chown') && l.includes(dir)),
      `${dir} is owned by the image's user`,
    )
  }
  const ignore = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n')
  for (const entry of ['.pfgate', 'node_modules', 'dist', '.git']) {
    assert.ok(ignore.includes(entry), `.dockerignore leaves ${entry} out of the build context`)
  }
})
