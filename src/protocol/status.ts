/**
 * Kubernetes `metav1.Status` bodies: the error format every pfgate HTTP error uses,
 * so kubectl and client libraries show our messages as they show the apiserver's.
 *
 * @module
 */

/** A Kubernetes `Status` object (the subset pfgate writes and reads). */
export interface KubeStatus {
  kind: 'Status'
  apiVersion: 'v1'
  metadata: Record<string, never>
  status: 'Failure' | 'Success'
  message: string
  reason: string
  details?: { name?: string; kind?: string; causes?: { reason: string; message: string }[] }
  code: number
}

/** The `reason` Kubernetes uses for each HTTP status (StatusReason). */
export function statusReason(code: number): string {
  switch (code) {
    case 400:
      return 'BadRequest'
    case 401:
      return 'Unauthorized'
    case 403:
      return 'Forbidden'
    case 404:
      return 'NotFound'
    case 405:
      return 'MethodNotAllowed'
    case 409:
      return 'Conflict'
    case 413:
      return 'RequestEntityTooLarge'
    case 429:
      return 'TooManyRequests'
    case 431:
      return 'RequestHeaderFieldsTooLarge'
    case 502:
    case 503:
      return 'ServiceUnavailable'
    case 504:
      return 'Timeout'
    default:
      return code >= 500 ? 'InternalError' : 'BadRequest'
  }
}

/**
 * Builds a failure `Status`. `errorCode` (our `PFG_ERR_*`) goes into
 * `details.causes[0].reason`, where Kubernetes clients ignore it and ours read it.
 */
export function buildStatus(
  code: number,
  message: string,
  errorCode?: string,
  details?: { name?: string; kind?: string },
): KubeStatus {
  const status: KubeStatus = {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: statusReason(code),
    code,
  }
  if (errorCode !== undefined || details !== undefined) {
    status.details = { ...details }
    if (errorCode !== undefined) status.details.causes = [{ reason: errorCode, message }]
  }
  return status
}

/** Parses a body that may be a `Status`; returns undefined when it is not one. */
export function parseStatus(body: string): KubeStatus | undefined {
  try {
    const value: unknown = JSON.parse(body)
    if (
      typeof value === 'object' &&
      value !== null &&
      (value as { kind?: unknown }).kind === 'Status' &&
      typeof (value as { message?: unknown }).message === 'string'
    ) {
      return value as KubeStatus
    }
  } catch {
    // not JSON: the caller shows the raw body
  }
  return undefined
}

/** Our error code carried in a `Status`, if any. */
export function statusErrorCode(status: KubeStatus): string | undefined {
  return status.details?.causes?.[0]?.reason
}
