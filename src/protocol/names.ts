/**
 * Validation of the names and numbers that arrive in paths and headers.
 * Kubernetes' own rules: namespaces are DNS-1123 labels, pod and node names
 * DNS-1123 subdomains (k8s.io/apimachinery/pkg/util/validation).
 *
 * @module
 */
import { appError } from '../shared/errors.js'

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

/** True when `s` is a DNS-1123 label (≤ 63 chars): a valid namespace. */
export function isDns1123Label(s: string): boolean {
  return s.length > 0 && s.length <= 63 && DNS1123_LABEL.test(s)
}

/** True when `s` is a DNS-1123 subdomain (≤ 253 chars): a valid pod or node name. */
export function isDns1123Subdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && DNS1123_SUBDOMAIN.test(s)
}

/** Throws `PFG_ERR_ROUTE_BAD_NAME` unless `ns` is a valid namespace. */
export function assertNamespace(ns: string): void {
  if (!isDns1123Label(ns)) {
    throw appError(
      'PFG_ERR_ROUTE_BAD_NAME',
      `invalid namespace ${JSON.stringify(ns)}: must be a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)`,
    )
  }
}

/** Throws `PFG_ERR_ROUTE_BAD_NAME` unless `name` is a valid pod or node name. */
export function assertObjectName(kind: string, name: string): void {
  if (!isDns1123Subdomain(name)) {
    throw appError(
      'PFG_ERR_ROUTE_BAD_NAME',
      `invalid ${kind} name ${JSON.stringify(name)}: must be a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.', at most 253 characters)`,
    )
  }
}

/**
 * Parses a port strictly: decimal digits only, no sign, no leading zeros, 1..65535.
 * `value` may be a header value (string, string[] or undefined).
 */
export function parsePortHeader(value: string | string[] | undefined): number {
  if (value === undefined) {
    throw appError('PFG_ERR_ROUTE_BAD_PORT', 'missing "port" header')
  }
  let text: string
  if (Array.isArray(value)) {
    if (value.length !== 1 || value[0] === undefined) {
      throw appError('PFG_ERR_ROUTE_BAD_PORT', 'exactly one "port" header is required')
    }
    text = value[0]
  } else {
    text = value
  }
  const port = parsePortNumber(text)
  if (port === undefined) {
    throw appError(
      'PFG_ERR_ROUTE_BAD_PORT',
      `invalid port ${JSON.stringify(text)}: must be an integer from 1 to 65535`,
    )
  }
  return port
}

/** Returns the port number for a strict decimal string in 1..65535, or undefined. */
export function parsePortNumber(s: string): number | undefined {
  if (!/^[1-9][0-9]{0,4}$/.test(s)) return undefined
  const n = Number(s)
  return n <= 65535 ? n : undefined
}
