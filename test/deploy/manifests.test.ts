/**
 * The Kubernetes manifests in deploy/kubernetes/ parse as YAML and hang
 * together: kinds and names, the RBAC the registry needs (list + watch on pods
 * and nodes, bound to the gateway's service account), the agent's host access,
 * ports that agree between the gateway's registry config and the agents, and
 * selectors that select. A real API server's schema validation is not run here.
 *
 * @module
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync } from 'node:fs'
import { parseAllDocuments, parse as parseYaml } from 'yaml'
import { parseKubeRegistryConfig } from '../../src/gateway/registry/kube/config.js'
import { parseAgentConfig } from '../../src/agent/config.js'
import { parseGatewayConfig } from '../../src/gateway/config.js'

// Compiled to dist/test/deploy/: the repository root is three levels up.
const dir = new URL('../../../deploy/kubernetes/', import.meta.url)

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return -- walking parsed YAML of Kubernetes objects; the assertions are the type checks */
type K8sObject = Record<string, any>

function load(): { file: string; obj: K8sObject }[] {
  const out: { file: string; obj: K8sObject }[] = []
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
  assert.ok(files.length >= 4, `manifests found: ${files.join(', ')}`)
  for (const file of files.sort()) {
    const docs = parseAllDocuments(readFileSync(new URL(file, dir), 'utf8'))
    for (const doc of docs) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`)
      assert.deepEqual(doc.warnings, [], `${file}: YAML warnings`)
      const obj = doc.toJS() as K8sObject | null
      if (obj === null) continue
      out.push({ file, obj })
    }
  }
  return out
}

const objects = load()
const byKind = (kind: string): K8sObject[] =>
  objects.filter((o) => o.obj.kind === kind).map((o) => o.obj)
const one = (kind: string, name: string): K8sObject => {
  const found = byKind(kind).filter((o) => o.metadata?.name === name)
  assert.equal(found.length, 1, `exactly one ${kind}/${name}`)
  return found[0]!
}

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding'])

test('every object has apiVersion, kind, a name, and the pfgate namespace when namespaced', () => {
  const seen = new Set<string>()
  for (const { file, obj } of objects) {
    const where = `${file}: ${obj.kind}/${obj.metadata?.name}`
    assert.equal(typeof obj.apiVersion, 'string', `${where}: apiVersion`)
    assert.equal(typeof obj.kind, 'string', `${where}: kind`)
    assert.match(obj.metadata?.name ?? '', /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${where}: name`)
    if (CLUSTER_SCOPED.has(obj.kind)) assert.equal(obj.metadata.namespace, undefined, where)
    else assert.equal(obj.metadata.namespace, 'pfgate', `${where}: namespace`)
    const key = `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`
    assert.ok(!seen.has(key), `${where}: duplicate`)
    seen.add(key)
  }
  const kinds = new Set(objects.map((o) => o.obj.kind))
  for (const k of [
    'Namespace',
    'ServiceAccount',
    'ClusterRole',
    'ClusterRoleBinding',
    'ConfigMap',
    'Deployment',
    'Service',
    'DaemonSet',
  ]) {
    assert.ok(kinds.has(k), `a ${k} is defined`)
  }
})

test('RBAC: the gateway service account may list and watch pods and nodes, create token and access reviews, and nothing more', () => {
  const deploy = one('Deployment', 'pfgate-gateway')
  const sa = deploy.spec.template.spec.serviceAccountName as string
  one('ServiceAccount', sa)
  const bindings = byKind('ClusterRoleBinding').filter((b) =>
    (b.subjects as K8sObject[]).some(
      (s) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === 'pfgate',
    ),
  )
  assert.equal(bindings.length, 1, 'one ClusterRoleBinding for the gateway')
  const binding = bindings[0]!
  assert.equal(binding.roleRef.kind, 'ClusterRole')
  assert.equal(binding.roleRef.apiGroup, 'rbac.authorization.k8s.io')
  const role = one('ClusterRole', binding.roleRef.name as string)
  const allowed = (resource: string, verb: string, group = ''): boolean =>
    (role.rules as K8sObject[]).some(
      (r) =>
        (r.apiGroups as string[]).includes(group) &&
        (r.resources as string[]).includes(resource) &&
        (r.verbs as string[]).includes(verb),
    )
  for (const resource of ['pods', 'nodes', 'services']) {
    for (const verb of ['list', 'watch']) {
      assert.ok(allowed(resource, verb), `${verb} ${resource}`)
    }
  }
  // Forward targets by workload (svc/, deploy/, rs/, sts/): their selectors.
  for (const resource of ['deployments', 'replicasets', 'statefulsets']) {
    for (const verb of ['list', 'watch']) {
      assert.ok(allowed(resource, verb, 'apps'), `${verb} apps/${resource}`)
    }
  }
  const reviews = [
    ['authentication.k8s.io', 'tokenreviews'],
    ['authorization.k8s.io', 'subjectaccessreviews'],
  ]
  for (const [group, resource] of reviews) {
    assert.ok(
      (role.rules as K8sObject[]).some(
        (r) =>
          (r.apiGroups as string[]).includes(group!) &&
          (r.resources as string[]).includes(resource!) &&
          (r.verbs as string[]).includes('create'),
      ),
      `create ${resource}`,
    )
  }
  for (const r of role.rules as K8sObject[]) {
    const isReview = reviews.some(
      ([g, res]) =>
        (r.apiGroups as string[]).every((x) => x === g) &&
        (r.resources as string[]).every((x) => x === res),
    )
    for (const v of r.verbs as string[]) {
      // Reviews are create-only and store nothing; everything else is read-only.
      const ok = isReview ? v === 'create' : ['list', 'watch', 'get'].includes(v)
      assert.ok(ok, `unexpected verb ${v} on ${(r.resources as string[]).join(',')}`)
    }
    assert.ok(!(r.resources as string[]).includes('*'), 'no wildcard resources')
    assert.ok(!(r.resources as string[]).includes('secrets'), 'no secrets')
  }
})

test('the gateway config uses the kubernetes registry, and it validates', () => {
  const cm = one('ConfigMap', 'pfgate-gateway-config')
  const config = parseYaml(cm.data['gateway.yaml'] as string) as K8sObject
  const registry = parseKubeRegistryConfig(config.registry, 'gateway.yaml', '/etc/pfgate/config')
  assert.equal(registry.inCluster, true)
  // The gateway Deployment mounts the ConfigMap where its args point.
  const deploy = one('Deployment', 'pfgate-gateway')
  const pod = deploy.spec.template.spec
  assert.equal(pod.automountServiceAccountToken, true, 'in-cluster mode needs the token')
  const container = pod.containers[0]
  const configArg = (container.args as string[])[
    (container.args as string[]).indexOf('--config') + 1
  ]
  const vol = (pod.volumes as K8sObject[]).find((v) => v.configMap?.name === cm.metadata.name)
  assert.ok(vol !== undefined, 'the config map is a volume')
  const mount = (container.volumeMounts as K8sObject[]).find((m) => m.name === vol.name)
  assert.equal(configArg, `${mount?.mountPath}/gateway.yaml`)
  // Every file the config names lives under a mounted volume.
  for (const path of [
    config.tls.cert,
    config.tls.key,
    config.agents.ca,
    config.agents.cert,
    config.agents.key,
  ] as string[]) {
    assert.ok(
      (container.volumeMounts as K8sObject[]).some((m) => path.startsWith(`${m.mountPath}/`)),
      `${path} is mounted`,
    )
  }
})

test('replicas and reverse agents: the count agents look for, their Service, the peers, the disruption budget', () => {
  const config = parseGatewayConfig(
    parseYaml(one('ConfigMap', 'pfgate-gateway-config').data['gateway.yaml'] as string),
    'gateway.yaml',
    '/etc/pfgate/config',
  )
  const deploy = one('Deployment', 'pfgate-gateway')
  assert.ok(deploy.spec.replicas >= 2)
  assert.equal(
    config.agents.reverse?.replicas,
    deploy.spec.replicas,
    'agents look for every replica',
  )
  assert.ok((config.agents.reverse?.readyMinAgents ?? 0) >= 1, 'readiness reflects agents')
  // The agents' Service reaches replicas before they are ready (readiness waits for agents).
  const agentsSvc = one('Service', 'pfgate-gateway-agents')
  assert.equal(agentsSvc.spec.publishNotReadyAddresses, true)
  const container = deploy.spec.template.spec.containers[0]
  const agentPort = (container.ports as K8sObject[]).find(
    (p) => p.name === agentsSvc.spec.ports[0].targetPort,
  )
  assert.equal(agentPort?.containerPort, config.agents.reverse?.port)
  // The agents dial that Service on that port.
  const agentConfig = parseAgentConfig(
    {
      ...parseYaml(one('ConfigMap', 'pfgate-agent-config').data['agent.yaml'] as string),
      nodeName: 'n',
    },
    'agent.yaml',
    '/etc/pfgate/config',
  )
  assert.equal(agentConfig.reverse?.host, 'pfgate-gateway-agents.pfgate.svc.cluster.local')
  assert.equal(agentConfig.reverse?.port, agentsSvc.spec.ports[0].port)
  // Peers: the headless Service's name, on the replicas' client port.
  const peersSvc = one('Service', 'pfgate-gateway-peers')
  assert.equal(peersSvc.spec.clusterIP, 'None')
  assert.equal(config.peers?.dns?.name, 'pfgate-gateway-peers.pfgate.svc.cluster.local')
  assert.equal(config.peers?.dns?.port, config.listen.port)
  // One replica at a time may be evicted.
  const pdb = one('PodDisruptionBudget', 'pfgate-gateway')
  assert.equal(pdb.spec.maxUnavailable, 1)
})

test('the agent DaemonSet: host network and PID, setns privileges only, /run/netns, the CRI socket, the registry port', () => {
  const ds = one('DaemonSet', 'pfgate-agent')
  const pod = ds.spec.template.spec
  assert.equal(pod.hostNetwork, true)
  assert.equal(pod.hostPID, true)
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet')
  assert.equal(pod.automountServiceAccountToken, false, 'the agent needs no API access')
  one('ServiceAccount', pod.serviceAccountName as string)
  const c = pod.containers[0]
  const sc = c.securityContext ?? {}
  const caps = (sc.capabilities?.add ?? []) as string[]
  // Exactly what entering a pod's namespace needs: setns (CAP_SYS_ADMIN) and another
  // process's /proc/<pid>/ns/net (CAP_SYS_PTRACE); not privileged, nothing else.
  assert.notEqual(sc.privileged, true, 'not privileged')
  assert.deepEqual([...caps].sort(), ['SYS_ADMIN', 'SYS_PTRACE'])
  assert.deepEqual(sc.capabilities?.drop, ['ALL'])
  assert.equal(sc.allowPrivilegeEscalation, false)
  assert.equal(sc.readOnlyRootFilesystem, true)
  // The runtimes' default seccomp profiles allow setns to a container with CAP_SYS_ADMIN.
  assert.equal(sc.seccompProfile?.type, 'RuntimeDefault')
  const netns = (c.volumeMounts as K8sObject[]).find((m) => m.mountPath === '/run/netns')
  assert.ok(netns !== undefined, '/run/netns is mounted')
  assert.equal(netns.mountPropagation, 'HostToContainer')
  const vol = (pod.volumes as K8sObject[]).find((v) => v.name === netns.name)
  assert.equal(vol?.hostPath?.path, '/run/netns')
  // The runtime's CRI socket: its directory, read-only, where the config's endpoint points.
  const agentYaml = parseYaml(
    one('ConfigMap', 'pfgate-agent-config').data['agent.yaml'] as string,
  ) as K8sObject
  const parsed = parseAgentConfig(
    { ...agentYaml, nodeName: 'node-x' },
    'agent.yaml',
    '/etc/pfgate/config',
  )
  assert.equal(parsed.dialer.type, 'netns')
  assert.equal(parsed.dialer.namespaces, 'runtime')
  const socket = (parsed.runtime.endpoint ?? '').replace(/^unix:\/\//, '')
  const cri = (c.volumeMounts as K8sObject[]).find((m) =>
    socket.startsWith(`${m.mountPath as string}/`),
  )
  assert.ok(cri !== undefined, `the CRI socket ${socket} is under a mounted volume`)
  assert.equal(cri.readOnly, true)
  const criVol = (pod.volumes as K8sObject[]).find((v) => v.name === cri.name)
  assert.equal(criVol?.hostPath?.path, cri.mountPath, 'mounted at the host path')
  assert.ok(
    !(c.volumeMounts as K8sObject[]).some((m) => m.mountPath === '/' || m.mountPath === '/run'),
    'not the whole host /run',
  )
  // The node name reaches the agent through the downward API.
  const env = (c.env as K8sObject[]).find((e) => e.name === 'NODE_NAME')
  assert.equal(env?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName')
  assert.ok((c.args as string[]).includes('$(NODE_NAME)'))

  // Ports agree: the agent's listen port = its containerPort = the gateway's registry.agentPort.
  const agentConfig = parseYaml(
    one('ConfigMap', 'pfgate-agent-config').data['agent.yaml'] as string,
  ) as K8sObject
  const gatewayConfig = parseYaml(
    one('ConfigMap', 'pfgate-gateway-config').data['gateway.yaml'] as string,
  ) as K8sObject
  const port = (c.ports as K8sObject[]).find((p) => p.name === 'agent')?.containerPort as number
  assert.equal(agentConfig.listen.port, port)
  assert.equal(gatewayConfig.registry.agentPort, port)
  assert.notEqual(port, 10250, 'not the kubelet port (host network)')
  assert.equal(agentConfig.dialer.type, 'netns')
})

test('selectors select: Deployment, DaemonSet, Service, PodDisruptionBudget', () => {
  const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
    Object.entries(selector).every(([k, v]) => labels[k] === v)
  for (const kind of ['Deployment', 'DaemonSet']) {
    for (const w of byKind(kind)) {
      assert.ok(
        matches(w.spec.selector.matchLabels, w.spec.template.metadata.labels),
        `${kind}/${w.metadata.name} selects its own pods`,
      )
    }
  }
  const deploy = one('Deployment', 'pfgate-gateway')
  const svc = one('Service', 'pfgate-gateway')
  assert.ok(matches(svc.spec.selector, deploy.spec.template.metadata.labels))
  const portNames = (deploy.spec.template.spec.containers[0].ports as K8sObject[]).map(
    (p) => p.name,
  )
  for (const p of svc.spec.ports as K8sObject[]) {
    assert.ok(portNames.includes(p.targetPort), `Service targetPort ${p.targetPort} exists`)
  }
  for (const pdb of byKind('PodDisruptionBudget')) {
    assert.ok(matches(pdb.spec.selector.matchLabels, deploy.spec.template.metadata.labels))
  }
  // Every ConfigMap volume refers to a ConfigMap defined here.
  for (const w of [...byKind('Deployment'), ...byKind('DaemonSet')]) {
    for (const v of w.spec.template.spec.volumes as K8sObject[]) {
      if (v.configMap !== undefined) one('ConfigMap', v.configMap.name as string)
    }
  }
})
