/**
 * What the CLI sends the gateway to say who it is, and where that comes from.
 *
 * @module
 */

/** One credential: a bearer token, a client certificate, or both. */
export interface Credential {
  token?: string
  /** PEM client certificate and key (both or neither). */
  cert?: Buffer
  key?: Buffer
  /** When the credential stops being valid (ms since epoch), when known. */
  expiresAt?: number
}

/**
 * A source of credentials (static, token file, exec plugin). `get()` is called for every
 * request and stream: it must be cheap when nothing changed.
 */
export interface CredentialProvider {
  /** The credential to use now (runs a plugin or re-reads a file only when needed). */
  get(): Promise<Credential>
  /**
   * The gateway refused `rejected` (401): a fresh credential, or undefined when none can
   * be had (a static token). Concurrent calls for the same credential share one refresh.
   */
  refresh(rejected: Credential): Promise<Credential | undefined>
  /** Stops timers and watchers. */
  close(): void
}

/** Writes one line for the user (the CLI's stderr). */
export type Warn = (message: string) => void
