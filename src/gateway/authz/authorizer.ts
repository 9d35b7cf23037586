/**
 * Authorization: default deny. Rules grant users and groups the port-forward
 * permission on namespaces, pod name patterns and port ranges; an admin list grants
 * the admin API. Evaluated once per stream, never cached per session
 * (docs/security.md#authorization-default-deny).
 *
 * @module
 */
import type { AuthzRule, GatewayConfig } from '../config.js'
import type { Identity } from '../auth/authenticator.js'

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
  }
}

/** Decides what an identity may do. */
export class Authorizer {
  readonly #rules: CompiledRule[]
  readonly #adminUsers: Set<string>
  readonly #adminGroups: Set<string>

  constructor(config: GatewayConfig['authorization']) {
    this.#rules = config.rules.map(compile)
    this.#adminUsers = new Set(config.admins.users)
    this.#adminGroups = new Set(config.admins.groups)
  }

  #matching(identity: Identity, namespace: string, pod: string): CompiledRule[] {
    return this.#rules.filter(
      (r) =>
        (r.users.has(identity.user) || identity.groups.some((g) => r.groups.has(g))) &&
        (r.anyNamespace || r.namespaces.has(namespace)) &&
        r.pods.some((re) => re.test(pod)),
    )
  }

  /** May `identity` forward to `port` of `namespace/pod`? */
  canPortForward(identity: Identity, namespace: string, pod: string, port: number): boolean {
    return this.#matching(identity, namespace, pod).some((r) =>
      r.ports.some((p) => port >= p.from && port <= p.to),
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

  /** May `identity` use the admin API? */
  isAdmin(identity: Identity): boolean {
    return (
      this.#adminUsers.has(identity.user) || identity.groups.some((g) => this.#adminGroups.has(g))
    )
  }
}
