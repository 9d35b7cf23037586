/**
 * `kubectl get pods` against the gateway: pod lists, label selectors and the
 * server-side `Table` rendering kubectl asks for (`Accept: application/json;as=Table;
 * v=v1;g=meta.k8s.io, ...`). Only pods the user may forward to are listed (the same
 * rule as a single pod's GET: no existence leak). No watch, no field selectors.
 *
 * @module
 */
import { appError } from '../../shared/errors.js'
import { podMetadata, podObject } from './objects.js'
import type { PodInfo } from '../registry/types.js'

/** One requirement of a label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`. */
export interface LabelRequirement {
  key: string
  op: '=' | '!=' | 'exists' | '!exists'
  value?: string
}

const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/
/** A label key: a DNS subdomain prefix (≤ 253) and `/`, then a name (≤ 63). */
const MAX_LABEL_KEY = 253 + 1 + 63

/**
 * The longest label selector accepted (characters). Kubernetes sets none, but every
 * requirement is at most a key (317), an operator and a value (63): 8 KiB is over twenty
 * of them, and it bounds what one request can make the parser do.
 */
export const MAX_LABEL_SELECTOR = 8 * 1024

/**
 * Parses the equality-based label selectors kubectl sends for `-l` (comma = and).
 * Set-based ones (`in`, `notin`) are refused with `PFG_ERR_ROUTE_BAD_QUERY`, and so is a
 * selector longer than {@link MAX_LABEL_SELECTOR}. One pass over the text, no
 * backtracking: the cost is linear in its length, whatever it holds.
 */
export function parseLabelSelector(selector: string | undefined): LabelRequirement[] {
  if (selector === undefined) return []
  if (selector.length > MAX_LABEL_SELECTOR) {
    throw appError(
      'PFG_ERR_ROUTE_BAD_QUERY',
      `label selector too long (${selector.length} characters; at most ${MAX_LABEL_SELECTOR})`,
    )
  }
  if (selector.trim() === '') return []
  return selector.split(',').map(parseRequirement)
}

/** One requirement: `k=v`, `k==v`, `k!=v`, `k`, `!k` (see {@link parseLabelSelector}). */
function parseRequirement(raw: string): LabelRequirement {
  const part = raw.trim()
  const bad = (why: string): never => {
    const shown = part.length > 80 ? `${part.slice(0, 80)}…` : part
    throw appError(
      'PFG_ERR_ROUTE_BAD_QUERY',
      `unable to parse label selector ${JSON.stringify(shown)}: ${why}`,
    )
  }
  let req: LabelRequirement
  // The first `=` or `!` is the operator (neither may appear in a key or a value).
  let at = -1
  for (let i = 0; i < part.length; i++) {
    const c = part.charCodeAt(i)
    if (c === 0x3d /* = */ || c === 0x21 /* ! */) {
      at = i
      break
    }
  }
  if (at === 0 && part[0] === '!' && part[1] !== '=') {
    req = { key: part.slice(1).trim(), op: '!exists' }
  } else if (at > 0 && (part[at] === '=' || part[at + 1] === '=')) {
    const op = part[at] === '!' ? '!=' : part[at + 1] === '=' ? '==' : '='
    const value = part.slice(at + op.length).trim()
    req = { key: part.slice(0, at).trim(), op: op === '!=' ? '!=' : '=', value }
    if (value.length > 63 || !LABEL_VALUE.test(value)) bad('invalid label value')
  } else {
    if (part.includes('(')) bad('set-based selectors are not supported')
    req = { key: part, op: 'exists' }
  }
  if (req.key.length > MAX_LABEL_KEY || !LABEL_KEY.test(req.key)) bad('invalid label key')
  return req
}

/** Does a pod's label set satisfy every requirement? */
export function matchesLabels(
  labels: Record<string, string> | undefined,
  reqs: readonly LabelRequirement[],
): boolean {
  const l = labels ?? {}
  return reqs.every((r) => {
    const has = Object.hasOwn(l, r.key)
    switch (r.op) {
      case '=':
        return has && l[r.key] === r.value
      case '!=':
        return !has || l[r.key] !== r.value
      case 'exists':
        return has
      case '!exists':
        return !has
    }
  })
}

/** A `v1.PodList`. */
export function podList(pods: readonly PodInfo[]): Record<string, unknown> {
  return {
    kind: 'PodList',
    apiVersion: 'v1',
    metadata: { resourceVersion: '1' },
    items: pods.map(podObject),
  }
}

/** Does the Accept header ask for a `meta.k8s.io` Table (as kubectl get does)? */
export function wantsTable(accept: string | undefined): boolean {
  if (accept === undefined) return false
  return accept
    .split(',')
    .some(
      (t) => /;\s*as=Table\b/.test(t) && /;\s*g=meta\.k8s\.io\b/.test(t) && /;\s*v=v1\b/.test(t),
    )
}

/** kube's `duration.HumanDuration`: the AGE column. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000)
  if (seconds < -1) return '<invalid>'
  if (seconds < 0) return '0s'
  if (seconds < 120) return `${seconds}s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`
  if (minutes < 180) return `${minutes}m`
  const hours = Math.floor(minutes / 60)
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`
  if (hours < 48) return `${hours}h`
  const days = Math.floor(hours / 24)
  if (hours < 24 * 8) return hours % 24 === 0 ? `${days}d` : `${days}d${hours % 24}h`
  if (hours < 24 * 365 * 2) return `${days}d`
  const years = Math.floor(days / 365)
  if (hours < 24 * 365 * 8) return days % 365 === 0 ? `${years}y` : `${years}y${days % 365}d`
  return `${years}y`
}

const COLUMNS = [
  ['Name', 'string', 'name', 0, 'Name of the pod.'],
  ['Ready', 'string', '', 0, 'Ready containers of the pod.'],
  ['Status', 'string', '', 0, 'The pod phase.'],
  ['Restarts', 'string', '', 0, 'Container restarts.'],
  ['Age', 'string', '', 0, 'Time since the pod was created.'],
  ['Node', 'string', '', 1, 'The node the pod is on; the gateway routes to it.'],
] as const

/** A `meta.k8s.io/v1` Table of pods, as kube-apiserver renders it for kubectl get. */
export function podTable(pods: readonly PodInfo[], now: number): Record<string, unknown> {
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion: '1' },
    columnDefinitions: COLUMNS.map(([name, type, format, priority, description]) => ({
      name,
      type,
      format,
      description,
      priority,
    })),
    rows: pods.map((p) => {
      const metadata = podMetadata(p)
      return {
        cells: [
          p.name,
          p.phase === 'Running' ? '1/1' : '0/1',
          p.phase,
          '0',
          humanDuration(now - Date.parse(metadata.creationTimestamp as string)),
          p.nodeName === '' ? '<none>' : p.nodeName,
        ],
        object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata },
      }
    }),
  }
}
