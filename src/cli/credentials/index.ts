/**
 * The credential provider for a client configuration: an exec plugin when the user
 * entry has one and no token; else a token file (re-read on change); else the static
 * token and/or client certificate. As in client-go, a static token wins over a plugin.
 *
 * @module
 */
import type { ClientConfig } from '../kubeconfig.js'
import { ExecCredentials, StaticCredentials, TokenFileCredentials } from './providers.js'
import type { Credential, CredentialProvider, Warn } from './types.js'

export type { Credential, CredentialProvider, Warn } from './types.js'

/** How the CLI talks to the user and the plugin. */
export interface CredentialIo {
  env: NodeJS.ProcessEnv
  /** Is stdin a terminal (may a plugin prompt)? */
  terminal: boolean
  stderr?: NodeJS.WritableStream
  warn: Warn
}

/** `PFGATE_EXEC_TIMEOUT`: seconds a plugin may take (default: 60, or 300 when interactive). */
function execTimeoutMs(env: NodeJS.ProcessEnv): number | undefined {
  const v = env.PFGATE_EXEC_TIMEOUT
  if (v === undefined || v === '') return undefined
  const s = Number(v)
  return Number.isFinite(s) && s > 0 ? s * 1000 : undefined
}

/** Builds the provider for `cfg`. */
export function credentialProvider(cfg: ClientConfig, io: CredentialIo): CredentialProvider {
  const certPart: Credential =
    cfg.cert !== undefined && cfg.key !== undefined ? { cert: cfg.cert, key: cfg.key } : {}
  if (cfg.token === undefined && cfg.exec !== undefined) {
    const timeoutMs = execTimeoutMs(io.env)
    return new ExecCredentials({
      config: cfg.exec,
      ...(cfg.execCluster !== undefined ? { cluster: cfg.execCluster } : {}),
      env: io.env,
      terminal: io.terminal,
      ...(io.stderr !== undefined ? { stderr: io.stderr } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      warn: io.warn,
    })
  }
  if (cfg.tokenFile !== undefined) return new TokenFileCredentials(cfg.tokenFile, certPart, io.warn)
  return new StaticCredentials(
    { ...certPart, ...(cfg.token !== undefined ? { token: cfg.token } : {}) },
    io.warn,
  )
}
