/**
 * One admin view over the gateway replicas (docs/scaling.md): listings of streams and
 * sessions gathered from every replica, a kill that reaches the replica holding the stream,
 * the reverse-connected agents per node, and the agents' part of readiness. The admin API
 * routes call these; peers are asked with the admin's own token and `scope=local`.
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import type { Peers, PeerAnswer } from './peers.js'
import type { ReverseAgents } from './relay/reverse-agents.js'
import type { PodRegistry } from './registry/types.js'

/** What the admin routes need to act across replicas. */
export interface ClusterView {
  gatewayId: string
  mode: 'dial' | 'reverse' | 'both'
  peers?: Peers | undefined
  reverse?: ReverseAgents | undefined
  /** Agents that must be connected for /readyz (reverse modes). */
  readyMinAgents: number
}

/** The parts of a request the fan-out needs. */
export interface AdminRequestLike {
  query: unknown
  headers: Record<string, string | string[] | undefined>
}

/** One replica's part of a listing. */
export interface ReplicaPart {
  gateway: string
  peer?: string
  error?: string
}

function isLocal(req: AdminRequestLike): boolean {
  const q = req.query as Record<string, unknown> | undefined
  return q?.scope === 'local'
}

function authorization(req: AdminRequestLike): string {
  const a = req.headers.authorization
  return typeof a === 'string' ? a : ''
}

/** Why the agents make this replica not ready, or undefined. */
export function agentReadinessProblem(
  view: ClusterView | undefined,
  registry: PodRegistry,
): string | undefined {
  if (view?.reverse === undefined || view.mode === 'dial') return undefined
  // Capped at the nodes that run pods: an empty cluster does not keep replicas unready.
  const nodes = new Set(
    registry
      .listPods()
      .map((p) => p.nodeName)
      .filter((n) => n !== ''),
  )
  const want = Math.min(view.readyMinAgents, nodes.size)
  const have = view.reverse.size
  return have < want ? `${have} of at least ${want} agents connected` : undefined
}

/**
 * `items` of this replica (each tagged with its gateway) plus, unless the request is
 * `scope=local`, every peer's: `{ items, replicas }`, where `replicas` says which replicas
 * answered (a peer that did not is listed with its error, never silently left out).
 */
export async function gatherListing(
  view: ClusterView | undefined,
  path: string,
  localItems: Record<string, unknown>[],
  req: AdminRequestLike,
): Promise<{ items: Record<string, unknown>[]; replicas?: ReplicaPart[] }> {
  // No cluster view (a gateway built without one, e.g. in tests): this replica's items only.
  if (view === undefined) return { items: localItems }
  const self = view.gatewayId
  const items = localItems.map((x) => ({ ...x, gateway: self }))
  const replicas: ReplicaPart[] = [{ gateway: self }]
  if (view.peers === undefined || isLocal(req)) return { items, replicas }
  const answers = await view.peers.all('GET', path, authorization(req))
  for (const a of answers) {
    const body = a.body as { gateway?: unknown; items?: unknown } | undefined
    const gw = typeof body?.gateway === 'string' ? body.gateway : undefined
    if (gw === self) continue // ourselves, reached through the peer list
    if (a.status !== 200 || gw === undefined || !Array.isArray(body?.items)) {
      replicas.push({ gateway: gw ?? '?', peer: a.peer, error: peerError(a) })
      continue
    }
    if (replicas.some((r) => r.gateway === gw)) continue // listed twice (URL and DNS)
    replicas.push({ gateway: gw, peer: a.peer })
    for (const it of body.items as Record<string, unknown>[]) items.push({ ...it, gateway: gw })
  }
  return { items, replicas }
}

function peerError(a: PeerAnswer): string {
  if (a.error !== undefined) return a.error
  const msg = (a.body as { message?: unknown } | undefined)?.message
  return `answered ${a.status}${typeof msg === 'string' ? `: ${msg.slice(0, 200)}` : ''}`
}

/**
 * Ends a stream or session wherever it lives: here if `localKill` finds it, else on the
 * first peer that answers 200. Throws PFG_ERR_ROUTE_NOT_FOUND when no replica has it
 * (naming the replicas that did not answer).
 */
export async function killAnywhere(
  view: ClusterView | undefined,
  path: string,
  what: string,
  localKill: () => boolean,
  req: AdminRequestLike,
): Promise<{ gateway: string }> {
  if (localKill()) return { gateway: view?.gatewayId ?? '' }
  if (view?.peers !== undefined && !isLocal(req)) {
    const answers = await view.peers.all('DELETE', path, authorization(req))
    const done = answers.find((a) => a.status === 200)
    if (done !== undefined) {
      const gw = (done.body as { details?: { gateway?: unknown } } | undefined)?.details?.gateway
      return { gateway: typeof gw === 'string' ? gw : done.peer }
    }
    const silent = answers.filter((a) => a.status === 0 || a.status >= 500)
    if (silent.length > 0) {
      throw appError(
        'PFG_ERR_ROUTE_NOT_FOUND',
        `no live ${what} on the replicas that answered (${silent.length} did not: ${silent
          .map((a) => a.peer)
          .join(', ')})`,
      )
    }
  }
  throw appError('PFG_ERR_ROUTE_NOT_FOUND', `no live ${what}`)
}
