/**
 * Errors of the Kubernetes API as the registry reports them.
 *
 * @module
 */
import { AppError } from '../../../shared/errors.js'

// ───────────────────────────── errors ─────────────────────────────

/**
 * A failed API request or an ERROR watch event. Coded `PFG_ERR_CONFIG_INVALID`
 * when the API server refused our credentials (401/403: fix the config or the
 * RBAC), `PFG_ERR_ROUTE_NOT_READY` otherwise (the view cannot be loaded yet).
 */
export class KubeApiError extends AppError {
  /** The API server's HTTP status (or the ERROR event's `code`). */
  readonly apiStatus: number
  /** The Status `reason` (`Expired`, `Unauthorized`, `Forbidden`...), or ''. */
  readonly reason: string

  constructor(apiStatus: number, reason: string, message: string) {
    super(
      apiStatus === 401 || apiStatus === 403 ? 'PFG_ERR_CONFIG_INVALID' : 'PFG_ERR_ROUTE_NOT_READY',
      message,
    )
    this.name = 'KubeApiError'
    this.apiStatus = apiStatus
    this.reason = reason
  }
}

export function isGone(err: unknown): boolean {
  return err instanceof KubeApiError && err.apiStatus === 410
}

/** A watch that must be replaced by a relist (undecodable event, an ERROR other than 410). */
export class RelistNeeded extends Error {}
