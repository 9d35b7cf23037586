/**
 * Kubernetes RBAC as the authorizer (`authorization.mode: rbac`): the gateway asks the
 * API server, with a `SubjectAccessReview` (`authorization.k8s.io/v1`), whether the user
 * may do what `kubectl port-forward` would need: `create` on `pods/portforward` in the
 * namespace, for that pod (and `get` on a service or workload when one is the target).
 * RBAC never sees ports (kubernetes/kubernetes#98440): pfgate's own rules, when any are
 * configured, narrow ports on top (both must allow).
 *
 * Answers are cached, bounded (`maxEntries`), allowed ones for `cacheTTL` and denied ones
 * for `negativeCacheTTL` (kube-apiserver's webhook authorizer caches 5 min and 30 s);
 * identical questions in flight share one review; at most `maxInFlight` and `perSecond`
 * reviews (callers are authenticated, but one user must not flood the API server).
 * The API server down, slow or refusing: `PFG_ERR_AUTH_UNAVAILABLE` (fail closed).
 *
 * @module
 */
import { createHash } from 'node:crypto'
import { appError, isAppError, newRef } from '../../shared/errors.js'
import type { AppError } from '../../shared/errors.js'
import type { Identity } from '../auth/authenticator.js'
import { ReviewLimiter, TtlCache } from '../auth/bounded-cache.js'
import type { ReviewLimits } from '../auth/bounded-cache.js'
import type { KubeReviewClient } from '../auth/kube-review.js'

export const SUBJECT_ACCESS_REVIEW_PATH = '/apis/authorization.k8s.io/v1/subjectaccessreviews'

/** What is asked: a verb on a resource (as RBAC rules name them). */
export interface ResourceAttributes {
  verb: string
  group: string
  resource: string
  subresource?: string
  namespace: string
  name: string
}

/** Options of {@link RbacAuthorizer}. */
export interface RbacOptions {
  client: KubeReviewClient
  cacheTtlMs: number
  negativeCacheTtlMs: number
  maxEntries: number
  limits: ReviewLimits
  now?: () => number
}

/** An answer: allowed, or denied with the API server's reason (for logs and audit). */
export interface RbacDecision {
  allowed: boolean
  reason: string
}

/** Asks the API server's authorizers. */
export class RbacAuthorizer {
  readonly #o: RbacOptions
  readonly #cache: TtlCache<RbacDecision>
  readonly #limiter: ReviewLimiter<RbacDecision>

  constructor(options: RbacOptions) {
    this.#o = options
    const now = options.now ?? Date.now
    this.#cache = new TtlCache(options.maxEntries, now)
    this.#limiter = new ReviewLimiter('access reviews', options.limits, now)
  }

  /** May `identity` port-forward to `namespace/pod` (`create pods/portforward`)? */
  portForward(identity: Identity, namespace: string, pod: string): Promise<RbacDecision> {
    return this.check(identity, {
      verb: 'create',
      group: '',
      resource: 'pods',
      subresource: 'portforward',
      namespace,
      name: pod,
    })
  }

  /** May `identity` `get` the pod (the CLIs read it before forwarding)? */
  getPod(identity: Identity, namespace: string, pod: string): Promise<RbacDecision> {
    return this.check(identity, { verb: 'get', group: '', resource: 'pods', namespace, name: pod })
  }

  /**
   * Asks one question. Rejects with `PFG_ERR_AUTH_UNAVAILABLE` (with `ref` and `reason`)
   * when the API server cannot answer.
   */
  async check(identity: Identity, attrs: ResourceAttributes): Promise<RbacDecision> {
    const spec = {
      resourceAttributes: {
        namespace: attrs.namespace,
        verb: attrs.verb,
        group: attrs.group,
        resource: attrs.resource,
        ...(attrs.subresource !== undefined ? { subresource: attrs.subresource } : {}),
        name: attrs.name,
      },
      user: identity.user,
      groups: identity.groups,
      ...(identity.uid !== undefined ? { uid: identity.uid } : {}),
      ...(identity.extra !== undefined ? { extra: identity.extra } : {}),
    }
    const key = createHash('sha256').update(JSON.stringify(spec)).digest('base64url')
    const hit = this.#cache.get(key)
    if (hit !== undefined) return hit
    try {
      return await this.#limiter.run(key, async () => {
        const doc = await this.#o.client.create(SUBJECT_ACCESS_REVIEW_PATH, {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec,
        })
        const decision = interpret(doc)
        this.#cache.set(
          key,
          decision,
          decision.allowed ? this.#o.cacheTtlMs : this.#o.negativeCacheTtlMs,
        )
        return decision
      })
    } catch (err) {
      throw unavailableAuthz(isAppError(err) ? err.message : String(err), err)
    }
  }

  close(): Promise<void> {
    this.#cache.clear()
    return this.#o.client.close()
  }
}

function interpret(doc: Record<string, unknown>): RbacDecision {
  if (doc.kind !== 'SubjectAccessReview') {
    throw appError('PFG_ERR_AUTH_UNAVAILABLE', 'the API server answered with something else')
  }
  const st = (doc.status ?? {}) as Record<string, unknown>
  const reason = typeof st.reason === 'string' ? st.reason.slice(0, 300) : ''
  const evaluationError =
    typeof st.evaluationError === 'string' ? st.evaluationError.slice(0, 300) : ''
  // `denied` short-circuits other authorizers; either way, only `allowed: true` allows.
  if (st.allowed === true && st.denied !== true) return { allowed: true, reason }
  return {
    allowed: false,
    reason: reason || evaluationError || 'no RBAC rule allows it',
  }
}

function unavailableAuthz(reason: string, cause: unknown): AppError {
  const ref = newRef()
  const err = appError(
    'PFG_ERR_AUTH_UNAVAILABLE',
    `authorization is unavailable (ref ${ref})`,
    cause !== undefined ? { cause } : {},
  )
  ;(err as AppError & { ref?: string; reason?: string }).ref = ref
  ;(err as AppError & { reason?: string }).reason = `SubjectAccessReview: ${reason}`
  return err
}
