/**
 * Authorization: default deny. Rules grant users and groups the port-forward
 * permission on namespaces, pod name patterns and port ranges; an admin list grants
 * the admin API. Evaluated once per stream, never cached per session
 * (docs/security.md#authorization-default-deny).
 *
 * In RBAC mode (`authorization.mode: rbac`, src/gateway/authz/rbac.ts) the cluster's RBAC
 * decides who may forward to which pod (a SubjectAccessReview for `create pods/portforward`)
 * and the rules, when there are any, narrow on top — RBAC never sees ports. The `may*`
 * methods are the ones callers use; they ask RBAC when it is on.
 *
 * @module
 */
import type { AuthzRule, GatewayConfig } from '../config.js'
import type { Identity } from '../auth/authenticator.js'
import type { RbacAuthorizer } from './rbac.js'

interface CompiledRule {
  users: Set<string>
  groups: Set<string>
  anyNamespace: boolean
  namespaces: Set<string>
  pods: RegExp[]
  services: RegExp[]
  /** `kind/name` patterns, matched against `deployment/web` etc. */
  workloads: RegExp[]
  ports: { from: number; to: number }[]
  udpPorts: { from: number; to: number }[]
}

/** Turns a `*`/`?` glob into an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.')
  return new RegExp(`^${body}$`)
}

function compile(rule: AuthzRule): CompiledRule {
  return {
    users: new Set(rule.users),
    groups: new Set(rule.groups),
    anyNamespace: rule.namespaces.includes('*'),
    namespaces: new Set(rule.namespaces),
    pods: rule.pods.map(globToRegExp),
    services: rule.services.map(globToRegExp),
    workloads: rule.workloads.map(globToRegExp),
    ports: rule.ports,
    udpPorts: rule.udpPorts,
  }
}

/** Decides what an identity may do. */
export class Authorizer {
  readonly #rules: CompiledRule[]
  readonly #adminUsers: Set<string>
  readonly #adminGroups: Set<string>

  readonly #rbac: RbacAuthorizer | undefined

  constructor(
    config: Pick<GatewayConfig['authorization'], 'rules' | 'admins'>,
    rbac?: RbacAuthorizer,
  ) {
    this.#rules = config.rules.map(compile)
    this.#adminUsers = new Set(config.admins.users)
    this.#adminGroups = new Set(config.admins.groups)
    this.#rbac = rbac
  }

  /** Is RBAC the authorizer? */
  get rbac(): boolean {
    return this.#rbac !== undefined
  }

  /**
   * May `identity` forward to each of `ports` of `namespace/pod` (no ports: to some port of
   * it)? RBAC first when it is on (rejects with `PFG_ERR_AUTH_UNAVAILABLE` when the API
   * server cannot answer), then the rules when there are any. Resolves with the port that is
   * refused (or `true` when the pod is refused as a whole), or undefined when allowed.
   * UDP ports (`transport` `udp`) are checked against the rules' `udpPorts`.
   */
  async mayForward(
    identity: Identity,
    namespace: string,
    pod: string,
    ports: readonly number[],
    transport: 'tcp' | 'udp' = 'tcp',
  ): Promise<number | true | undefined> {
    if (this.#rbac !== undefined) {
      const decision = await this.#rbac.portForward(identity, namespace, pod)
      if (!decision.allowed) return true
      if (this.#rules.length === 0) return undefined
    }
    if (ports.length === 0) return this.canAccessPod(identity, namespace, pod) ? undefined : true
    return ports.find((p) => !this.canPortForward(identity, namespace, pod, p, transport))
  }

  /** May `identity` see the pod (the CLIs read it before forwarding)? */
  async mayAccessPod(identity: Identity, namespace: string, pod: string): Promise<boolean> {
    return (await this.mayForward(identity, namespace, pod, [])) === undefined
  }

  #matching(identity: Identity, namespace: string, pod: string): CompiledRule[] {
    return this.#rules.filter(
      (r) =>
        (r.users.has(identity.user) || identity.groups.some((g) => r.groups.has(g))) &&
        (r.anyNamespace || r.namespaces.has(namespace)) &&
        r.pods.some((re) => re.test(pod)),
    )
  }

  /**
   * May `identity` forward to `port` of `namespace/pod`? UDP ports are granted by
   * `udpPorts` only (a rule's `ports` are TCP).
   */
  canPortForward(
    identity: Identity,
    namespace: string,
    pod: string,
    port: number,
    transport: 'tcp' | 'udp' = 'tcp',
  ): boolean {
    return this.#matching(identity, namespace, pod).some((r) =>
      (transport === 'udp' ? r.udpPorts : r.ports).some((p) => port >= p.from && port <= p.to),
    )
  }

  /** May `identity` see the pod at all (read it; forward to some port of it)? */
  canAccessPod(identity: Identity, namespace: string, pod: string): boolean {
    return this.#matching(identity, namespace, pod).length > 0
  }

  /**
   * May `identity` name this service (`kind` service) or workload (deployment, replicaset,
   * statefulset) in a forward? The pod it resolves to is authorized separately, down to
   * the port (canPortForward).
   */
  canUseTarget(identity: Identity, namespace: string, kind: string, name: string): boolean {
    return this.#rules.some(
      (r) =>
        (r.users.has(identity.user) || identity.groups.some((g) => r.groups.has(g))) &&
        (r.anyNamespace || r.namespaces.has(namespace)) &&
        (kind === 'service'
          ? r.services.some((re) => re.test(name))
          : r.workloads.some((re) => re.test(`${kind}/${name}`))),
    )
  }

  /**
   * May `identity` name this service or workload in a forward? With RBAC on, the API server
   * is asked whether the user may `get` it (as kubectl itself must, to resolve it), and the
   * rules narrow that when there are any; otherwise the rules' `services`/`workloads` decide.
   */
  async mayUseTarget(
    identity: Identity,
    namespace: string,
    kind: string,
    name: string,
  ): Promise<boolean> {
    if (this.#rbac !== undefined) {
      const decision = await this.#rbac.check(identity, {
        verb: 'get',
        group: kind === 'service' ? '' : 'apps',
        resource: `${kind}s`,
        namespace,
        name,
      })
      if (!decision.allowed) return false
      if (this.#rules.length === 0) return true
    }
    return this.canUseTarget(identity, namespace, kind, name)
  }

  /**
   * The rules' answer for a candidate pod of a service or workload (synchronous, to pick
   * among many); with RBAC on and no rules, every candidate passes here and the picked pod
   * is asked of the API server ({@link mayForward}).
   */
  mayBeCandidate(...q: Parameters<Authorizer['canPortForward']>): boolean {
    if (this.#rbac !== undefined && this.#rules.length === 0) return true
    return this.canPortForward(...q)
  }

  /** May `identity` use the admin API? */
  isAdmin(identity: Identity): boolean {
    return (
      this.#adminUsers.has(identity.user) || identity.groups.some((g) => this.#adminGroups.has(g))
    )
  }
}
