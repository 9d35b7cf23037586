/**
 * Exec credential plugins, as kubectl runs them (client-go's `plugin/pkg/client/auth/exec`):
 * the kubeconfig's `user.exec` names a command (kubelogin, `aws eks get-token`,
 * `gke-gcloud-auth-plugin`, `pfgate login get-token`) that prints an `ExecCredential`
 * (`client.authentication.k8s.io/v1` or `v1beta1`) with a token or a client certificate
 * and, usually, an `expirationTimestamp`.
 *
 * - The command gets the CLI's environment plus `exec.env`, and `KUBERNETES_EXEC_INFO`:
 *   an `ExecCredential` whose `spec.interactive` says whether it may talk to the user,
 *   and `spec.cluster` when `provideClusterInfo` is set.
 * - `interactiveMode` (`Never`, `IfAvailable`, `Always`; required in v1, `IfAvailable`
 *   by default in v1beta1): the plugin is interactive when stdin is a terminal and the mode
 *   is not `Never`; then it inherits stdin. `Always` without a terminal is an error.
 * - Its stderr goes to ours (prompts, device-flow instructions); its stdout is read,
 *   bounded to {@link MAX_OUTPUT_BYTES}, and must be exactly one ExecCredential of the same
 *   apiVersion.
 * - It has {@link DEFAULT_EXEC_TIMEOUT_MS} to answer (five minutes when interactive, a
 *   person is typing); client-go waits forever, but a hung plugin must not hang every new
 *   connection of a forward.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import { appError } from '../../shared/errors.js'
import type { Credential } from './types.js'

export const EXEC_API_VERSIONS = [
  'client.authentication.k8s.io/v1',
  'client.authentication.k8s.io/v1beta1',
] as const

/** How long a non-interactive plugin may take. */
export const DEFAULT_EXEC_TIMEOUT_MS = 60_000
/** How long an interactive plugin may take (someone is typing or using a browser). */
export const INTERACTIVE_EXEC_TIMEOUT_MS = 5 * 60_000
/** The most stdout a plugin may print. */
export const MAX_OUTPUT_BYTES = 1024 * 1024

export type InteractiveMode = 'Never' | 'IfAvailable' | 'Always'

/** A kubeconfig `user.exec`, checked and with its command path resolved. */
export interface ExecConfig {
  apiVersion: (typeof EXEC_API_VERSIONS)[number]
  command: string
  args: string[]
  env: { name: string; value: string }[]
  interactiveMode: InteractiveMode
  provideClusterInfo: boolean
  installHint?: string
}

/** The cluster as the plugin is told about it (`provideClusterInfo`). */
export interface ExecClusterInfo {
  server: string
  certificateAuthorityData?: string
  insecureSkipTLSVerify?: boolean
  tlsServerName?: string
  config?: unknown
}

function invalid(where: string, message: string): never {
  throw appError('PFG_ERR_CLI_KUBECONFIG', `${where}: ${message}`)
}

/**
 * Checks a kubeconfig `user.exec` as client-go does. `resolveCommand` turns a relative
 * command with a slash into a path next to the kubeconfig (a bare name is found on PATH).
 */
export function parseExecConfig(
  raw: unknown,
  where: string,
  resolveCommand: (p: string) => string,
): ExecConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    invalid(where, 'exec must be a mapping')
  const o = raw as Record<string, unknown>
  const apiVersion = o.apiVersion
  if (!(EXEC_API_VERSIONS as readonly unknown[]).includes(apiVersion)) {
    invalid(
      where,
      `exec plugin apiVersion ${JSON.stringify(apiVersion)} is not supported (use ${EXEC_API_VERSIONS.join(' or ')})`,
    )
  }
  if (typeof o.command !== 'string' || o.command === '') invalid(where, 'exec.command is required')
  const args = o.args ?? []
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string'))
    invalid(where, 'exec.args must be a list of strings')
  const env = o.env ?? []
  if (
    !Array.isArray(env) ||
    !env.every(
      (e: unknown) =>
        typeof e === 'object' &&
        e !== null &&
        typeof (e as { name?: unknown }).name === 'string' &&
        typeof (e as { value?: unknown }).value === 'string',
    )
  )
    invalid(where, 'exec.env must be a list of {name, value} strings')
  let mode = o.interactiveMode
  if (mode === undefined || mode === '') {
    if (apiVersion === 'client.authentication.k8s.io/v1')
      invalid(where, 'exec.interactiveMode is required in client.authentication.k8s.io/v1')
    mode = 'IfAvailable'
  }
  if (mode !== 'Never' && mode !== 'IfAvailable' && mode !== 'Always')
    invalid(
      where,
      `exec.interactiveMode ${JSON.stringify(mode)} is not Never, IfAvailable or Always`,
    )
  const command = o.command.includes('/') ? resolveCommand(o.command) : o.command
  return {
    apiVersion: apiVersion as ExecConfig['apiVersion'],
    command,
    args: args,
    env: (env as { name: string; value: string }[]).map((e) => ({ name: e.name, value: e.value })),
    interactiveMode: mode,
    provideClusterInfo: o.provideClusterInfo === true,
    ...(typeof o.installHint === 'string' ? { installHint: o.installHint } : {}),
  }
}

/** How to run a plugin. */
export interface RunExecOptions {
  /** The user's terminal, when there is one (stdin is a TTY). */
  terminal: boolean
  cluster?: ExecClusterInfo
  /** The CLI's environment (the plugin's, plus exec.env). */
  env: NodeJS.ProcessEnv
  timeoutMs?: number
  /** Where the plugin's stderr goes. */
  stderr?: NodeJS.WritableStream
  now?: () => number
}

function failure(config: ExecConfig, message: string): Error {
  const hint = config.installHint !== undefined ? `\n${config.installHint.trim()}` : ''
  return appError('PFG_ERR_CLI_CREDENTIALS', `exec plugin ${config.command}: ${message}${hint}`)
}

/** Runs the plugin once and returns its credential. Rejects with `PFG_ERR_CLI_CREDENTIALS`. */
export function runExecPlugin(config: ExecConfig, options: RunExecOptions): Promise<Credential> {
  const interactive = options.terminal && config.interactiveMode !== 'Never'
  if (config.interactiveMode === 'Always' && !options.terminal) {
    return Promise.reject(
      failure(
        config,
        'needs an interactive terminal (interactiveMode: Always) and stdin is not one',
      ),
    )
  }
  const spec: Record<string, unknown> = { interactive }
  if (config.provideClusterInfo && options.cluster !== undefined) spec.cluster = options.cluster
  const info = JSON.stringify({ kind: 'ExecCredential', apiVersion: config.apiVersion, spec })
  const env: NodeJS.ProcessEnv = { ...options.env }
  for (const e of config.env) env[e.name] = e.value
  env.KUBERNETES_EXEC_INFO = info
  const timeoutMs =
    options.timeoutMs ?? (interactive ? INTERACTIVE_EXEC_TIMEOUT_MS : DEFAULT_EXEC_TIMEOUT_MS)
  return new Promise((resolve, reject) => {
    let child
    try {
      child = spawn(config.command, config.args, {
        env,
        stdio: [interactive ? 'inherit' : 'ignore', 'pipe', 'pipe'],
      })
    } catch (err) {
      reject(failure(config, (err as Error).message))
      return
    }
    const out: Buffer[] = []
    let size = 0
    let settled = false
    const done = (err: Error | undefined, cred?: Credential): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err !== undefined) reject(err)
      else resolve(cred as Credential)
    }
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      done(failure(config, `did not answer within ${Math.round(timeoutMs / 1000)} s`))
    }, timeoutMs)
    child.stdout.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_OUTPUT_BYTES) {
        child.kill('SIGKILL')
        done(failure(config, `printed more than ${MAX_OUTPUT_BYTES} bytes`))
        return
      }
      out.push(chunk)
    })
    child.stderr.on('data', (chunk: Buffer) => options.stderr?.write(chunk))
    child.on('error', (err: NodeJS.ErrnoException) => {
      done(
        failure(
          config,
          err.code === 'ENOENT' ? 'executable not found' : `cannot run: ${err.message}`,
        ),
      )
    })
    child.on('close', (code, signal) => {
      if (settled) return
      if (code !== 0) {
        done(
          failure(config, `exited with ${signal !== null ? `signal ${signal}` : `status ${code}`}`),
        )
        return
      }
      try {
        done(
          undefined,
          parseExecCredential(config, Buffer.concat(out).toString('utf8'), options.now),
        )
      } catch (err) {
        done(err as Error)
      }
    })
  })
}

/** The credential in a plugin's output. Throws `PFG_ERR_CLI_CREDENTIALS` when it is not one. */
export function parseExecCredential(
  config: ExecConfig,
  text: string,
  now: () => number = Date.now,
): Credential {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    throw failure(config, 'did not print an ExecCredential (invalid JSON)')
  }
  const o = (typeof doc === 'object' && doc !== null ? doc : {}) as Record<string, unknown>
  if (o.kind !== 'ExecCredential')
    throw failure(config, `printed kind ${JSON.stringify(o.kind)}, not ExecCredential`)
  if (o.apiVersion !== config.apiVersion)
    throw failure(
      config,
      `printed apiVersion ${JSON.stringify(o.apiVersion)}, the kubeconfig expects ${config.apiVersion}`,
    )
  const st = o.status
  if (typeof st !== 'object' || st === null) throw failure(config, 'printed no status')
  const s = st as Record<string, unknown>
  const cred: Credential = {}
  if (typeof s.token === 'string' && s.token !== '') cred.token = s.token
  const cert = s.clientCertificateData
  const key = s.clientKeyData
  if ((typeof cert === 'string' && cert !== '') !== (typeof key === 'string' && key !== ''))
    throw failure(
      config,
      'printed a client certificate without its key, or a key without its certificate',
    )
  if (typeof cert === 'string' && cert !== '' && typeof key === 'string') {
    cred.cert = Buffer.from(cert)
    cred.key = Buffer.from(key)
  }
  if (cred.token === undefined && cred.cert === undefined)
    throw failure(config, 'printed neither a token nor a client certificate')
  if (s.expirationTimestamp !== undefined && s.expirationTimestamp !== null) {
    const at = typeof s.expirationTimestamp === 'string' ? Date.parse(s.expirationTimestamp) : NaN
    if (Number.isNaN(at))
      throw failure(
        config,
        `printed an invalid expirationTimestamp ${JSON.stringify(s.expirationTimestamp)}`,
      )
    if (at <= now())
      throw failure(config, `printed a credential that expired at ${new Date(at).toISOString()}`)
    cred.expiresAt = at
  }
  return cred
}
