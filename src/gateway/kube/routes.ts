/**
 * The slice of the Kubernetes API kubectl and client libraries read before they forward
 * (docs/kubernetes-clients.md#the-kubernetes-api-surface), served from the registry:
 * `/version` (public), discovery (`/api`, `/apis`, `/api/v1`), the pod and pod lists.
 * A pod is visible only to those who may forward to it (no existence leak); writes are
 * 405, watches and field selectors are refused. Objects and lists are built in
 * objects.ts and list.ts.
 *
 * @module
 */
import { assertNamespace } from '../../protocol/names.js'
import { appError } from '../../shared/errors.js'
import type { Authorizer } from '../authz/authorizer.js'
import { resolvePod } from '../forward/resolve-pod.js'
import { identityOf } from '../http/auth.js'
import type { GatewayPlugin } from '../http/types.js'
import type { PodRegistry } from '../registry/types.js'
import { matchesLabels, parseLabelSelector, podList, podTable, wantsTable } from './list.js'
import {
  aggregatedDiscovery,
  aggregatedDiscoveryContentType,
  aggregatedDiscoveryVersion,
  apiGroupList,
  apiVersions,
  coreV1Resources,
  podObject,
} from './objects.js'

/** The Kubernetes version `/version` reports (kubectl ≥ 1.31 then uses the WebSocket tunnel). */
const KUBERNETES_VERSION = { major: '1', minor: '33', gitVersion: 'v1.33.0-pfgate' }

/** What the facade reads. */
export interface KubeApiOptions {
  registry: Pick<PodRegistry, 'isReady' | 'getPod' | 'listPods'>
  authorizer: Pick<Authorizer, 'mayForward' | 'mayAccessPod'>
}

function notReady(): Error {
  return appError('PFG_ERR_ROUTE_NOT_READY', 'the pod registry has not synced yet; retry shortly')
}

/** The Kubernetes API facade's routes. */
export const kubeApiRoutes: GatewayPlugin<KubeApiOptions> = async (app, deps) => {
  app.get('/version', { config: { auth: 'public' } }, async () => ({
    ...KUBERNETES_VERSION,
    gitCommit: 'pfgate',
    gitTreeState: 'clean',
    buildDate: '2026-01-01T00:00:00Z',
    goVersion: 'n/a (pfgate on node ' + process.version + ')',
    compiler: 'pfgate',
    platform: `${process.platform}/${process.arch}`,
  }))

  // The pod a client is about to forward to.
  app.get<{ Params: { ns: string; pod: string } }>(
    '/api/v1/namespaces/:ns/pods/:pod',
    async (request, reply) => {
      const { ns, pod } = request.params
      // Names → authorize (default deny: no existence leak) → ready → lookup, as a forward.
      const info = await resolvePod(deps, identityOf(request), { namespace: ns, pod }, 'get')
      if (wantsTable(request.headers.accept)) {
        return reply.type('application/json').send(podTable([info], Date.now()))
      }
      return reply.type('application/json').send(podObject(info))
    },
  )

  // kubectl get pods [-n NS | -A] [-l SELECTOR]: the pods the user may forward to.
  for (const url of ['/api/v1/namespaces/:ns/pods', '/api/v1/pods']) {
    app.get<{ Params: { ns?: string }; Querystring: Record<string, string | undefined> }>(
      url,
      async (request, reply) => {
        const ns = request.params.ns
        if (ns !== undefined) assertNamespace(ns)
        const q = request.query
        if (q.watch === 'true' || q.watch === '1') {
          throw appError(
            'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
            'the server does not allow this method on the requested resource (watch pods)',
          )
        }
        if (q.fieldSelector !== undefined && q.fieldSelector !== '') {
          throw appError(
            'PFG_ERR_ROUTE_BAD_QUERY',
            'field selectors are not supported on pods here',
          )
        }
        const selector = parseLabelSelector(q.labelSelector)
        if (!deps.registry.isReady()) throw notReady()
        const identity = identityOf(request)
        const candidates = deps.registry
          .listPods()
          .filter(
            (p) => (ns === undefined || p.namespace === ns) && matchesLabels(p.labels, selector),
          )
        // In RBAC mode each pod is one (cached) SubjectAccessReview.
        const allowed = await Promise.all(
          candidates.map((p) => deps.authorizer.mayAccessPod(identity, p.namespace, p.name)),
        )
        const pods = candidates
          .filter((_, i) => allowed[i] === true)
          .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name))
        return reply
          .type('application/json')
          .send(wantsTable(request.headers.accept) ? podTable(pods, Date.now()) : podList(pods))
      },
    )
  }

  // Discovery: legacy documents, or aggregated ones when the Accept header asks for them.
  for (const root of ['api', 'apis'] as const) {
    app.get(`/${root}`, async (request, reply) => {
      const v = aggregatedDiscoveryVersion(request.headers.accept)
      reply.header('vary', 'Accept')
      if (v !== undefined) {
        // A Buffer keeps the Content-Type verbatim (for a string Fastify would quote its
        // parameters and add a charset, unlike kube-apiserver).
        return reply
          .header('content-type', aggregatedDiscoveryContentType(v))
          .send(Buffer.from(JSON.stringify(aggregatedDiscovery(v, root))))
      }
      return reply
        .type('application/json')
        .send(root === 'api' ? apiVersions(request.headers.host ?? '') : apiGroupList())
    })
  }
  app.get('/api/v1', async (_request, reply) =>
    reply.type('application/json').send(coreV1Resources()),
  )
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/api/v1/namespaces/:ns/pods/:pod',
    handler: async (request) => {
      throw appError(
        'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
        `the server does not allow this method on the requested resource (${request.method} pods)`,
      )
    },
  })
}
