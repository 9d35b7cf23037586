/**
 * Kubernetes impersonation (`kubectl --as=U --as-group=G`: the `Impersonate-User`,
 * `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-*` headers). pfgate does
 * not implement impersonation, and must never act as someone other than asked: a request
 * that carries any of these headers is refused with 403 (`PFG_ERR_AUTH_IMPERSONATION`,
 * audited), after authentication, on every path — API routes, upgrades, native streams —
 * as kube-apiserver refuses a user who may not impersonate.
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import type { AppError } from '../shared/errors.js'
import { plainText } from '../shared/text.js'
import type { Identity } from './auth/authenticator.js'

/** The impersonation a request asked for. */
export interface Impersonation {
  /** The impersonation headers present (lower case). */
  headers: string[]
  /** What the first of them asks to become (kube's message names it). */
  resource: 'users' | 'groups' | 'uids' | 'userextras'
  name: string
}

const ORDER = ['impersonate-user', 'impersonate-group', 'impersonate-uid'] as const
const RESOURCE = {
  'impersonate-user': 'users',
  'impersonate-group': 'groups',
  'impersonate-uid': 'uids',
} as const

/** The impersonation headers of a request (names in any case), or undefined when none. */
export function impersonationOf(
  headers: Record<string, string | string[] | number | undefined>,
): Impersonation | undefined {
  const found: string[] = []
  for (const key of Object.keys(headers)) {
    const k = key.toLowerCase()
    if ((ORDER as readonly string[]).includes(k) || k.startsWith('impersonate-extra-'))
      found.push(k)
  }
  if (found.length === 0) return undefined
  const first = ORDER.find((h) => found.includes(h))
  const header = first ?? (found[0] as string)
  const raw =
    headers[header] ?? headers[Object.keys(headers).find((k) => k.toLowerCase() === header) ?? '']
  const value = Array.isArray(raw) ? (raw[0] ?? '') : String(raw ?? '')
  return {
    headers: found.sort(),
    resource: first !== undefined ? RESOURCE[first] : 'userextras',
    name: plainText(value, 253),
  }
}

/** The 403 for `identity` asking for `imp` (kube-apiserver's wording, then ours). */
export function impersonationRefused(identity: Identity, imp: Impersonation): AppError {
  const group =
    imp.resource === 'uids' || imp.resource === 'userextras' ? 'authentication.k8s.io' : ''
  return appError(
    'PFG_ERR_AUTH_IMPERSONATION',
    `${imp.resource} "${imp.name}" is forbidden: User "${identity.user}" cannot impersonate resource "${imp.resource}" in API group "${group}" at the cluster scope: pfgate does not support impersonation (${imp.headers.join(', ')})`,
  )
}
