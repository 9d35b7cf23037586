/**
 * Credentials for the gateway's Kubernetes API client: from a kubeconfig file
 * (current or named context) or from the in-cluster service-account files, the
 * two ways client-go's `rest.Config` is usually built. Only static credentials
 * are supported (CA, client certificate, bearer token or token file); exec and
 * auth-provider plugins are refused with a clear message, never ignored.
 *
 * Bound service-account tokens rotate (the kubelet rewrites the file about every
 * hour), so a token file is re-read periodically by {@link BearerTokenSource},
 * as client-go's cached file token source does, and at once after a 401.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { appError } from '../../shared/errors.js'

/** Where a pod's service-account credentials are mounted. */
export const DEFAULT_SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount'

/** How often a token file is re-read (client-go uses one minute too). */
export const DEFAULT_TOKEN_REFRESH_MS = 60_000

/** Everything needed to reach and authenticate to one API server. */
export interface KubeCredentials {
  /** API server URL: `https://host:port`, possibly with a path prefix (some proxies use one). */
  server: string
  /** PEM CA bundle to verify the server with; the system roots when absent. */
  ca?: Buffer
  /** PEM client certificate and key (both or neither). */
  cert?: Buffer
  key?: Buffer
  /** A static bearer token. */
  token?: string
  /** A file holding the bearer token, re-read periodically; wins over `token` (as in client-go). */
  tokenFile?: string
  /** Skip server certificate verification (kubeconfig `insecure-skip-tls-verify`). */
  insecureSkipTlsVerify: boolean
  /** Name to verify the server certificate against instead of the URL's host. */
  tlsServerName?: string
  /** The context's or the service account's namespace, if any (informational). */
  namespace?: string
  /** Where these came from, for logs (`kubeconfig /x (context y)`, `in-cluster`); no secrets. */
  source: string
}

/** Options for {@link loadInClusterCredentials}. */
export interface InClusterOptions {
  /** Directory holding `token`, `ca.crt` and `namespace` (default {@link DEFAULT_SERVICE_ACCOUNT_DIR}). */
  serviceAccountDir?: string
  /** The environment to read `KUBERNETES_SERVICE_HOST`/`_PORT` from (main.ts passes process.env). */
  env: Readonly<Record<string, string | undefined>>
}

function invalid(message: string, cause?: unknown): Error {
  return appError('PFG_ERR_CONFIG_INVALID', message, cause === undefined ? {} : { cause })
}

function readRequired(path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw invalid(`cannot read ${what} ${path}: ${(err as Error).message}`, err)
  }
}

/**
 * Credentials from the service-account files a pod gets: the API server is
 * `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`, the token file is re-read
 * periodically. Throws `PFG_ERR_CONFIG_INVALID` when not running in a pod.
 */
export function loadInClusterCredentials(options: InClusterOptions): KubeCredentials {
  const dir = options.serviceAccountDir ?? DEFAULT_SERVICE_ACCOUNT_DIR
  const host = options.env.KUBERNETES_SERVICE_HOST
  const port = options.env.KUBERNETES_SERVICE_PORT
  if (host === undefined || host === '' || port === undefined || port === '') {
    throw invalid(
      'registry.inCluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod?)',
    )
  }
  const tokenFile = join(dir, 'token')
  // Read once now so a missing mount fails at start-up, not on the first request.
  if (readRequired(tokenFile, 'service-account token').toString('utf8').trim() === '') {
    throw invalid(`service-account token ${tokenFile} is empty`)
  }
  const ca = readRequired(join(dir, 'ca.crt'), 'service-account CA')
  let namespace: string | undefined
  try {
    namespace = readFileSync(join(dir, 'namespace'), 'utf8').trim() || undefined
  } catch {
    namespace = undefined // optional: only informational
  }
  const hostPart = isIP(host) === 6 ? `[${host}]` : host
  return {
    server: `https://${hostPart}:${port}`,
    ca,
    tokenFile,
    insecureSkipTlsVerify: false,
    ...(namespace !== undefined ? { namespace } : {}),
    source: `in-cluster (${dir})`,
  }
}

type Entry = Record<string, unknown>

function asRecord(value: unknown): Entry | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Entry)
    : undefined
}

function findNamed(list: unknown, name: string, what: string, file: string): Entry {
  if (Array.isArray(list)) {
    for (const item of list) {
      const rec = asRecord(item)
      if (rec?.name === name) {
        const inner = asRecord(rec[what])
        if (inner !== undefined) return inner
        throw invalid(`${file}: ${what} "${name}" has no "${what}" field`)
      }
    }
  }
  throw invalid(`${file}: no ${what} named "${name}"`)
}

function optString(rec: Entry, key: string, file: string): string | undefined {
  const v = rec[key]
  if (v === undefined || v === null || v === '') return undefined
  if (typeof v !== 'string') throw invalid(`${file}: "${key}" must be a string`)
  return v
}

/** Reads `<name>-data` (base64) or `<name>` (a path relative to the kubeconfig's directory). */
function dataOrFile(rec: Entry, name: string, base: string, file: string): Buffer | undefined {
  const data = optString(rec, `${name}-data`, file)
  if (data !== undefined) {
    const buf = Buffer.from(data, 'base64')
    if (buf.length === 0) throw invalid(`${file}: "${name}-data" is not valid base64`)
    return buf
  }
  const path = optString(rec, name, file)
  if (path === undefined) return undefined
  return readRequired(isAbsolute(path) ? path : resolve(base, path), `${file}: ${name}`)
}

/**
 * Credentials from a kubeconfig file, for its `current-context` or the named
 * `context`. Relative file paths in it resolve against the file's directory (as
 * kubectl does). Throws `PFG_ERR_CONFIG_INVALID` naming the problem.
 */
export function loadKubeconfigCredentials(path: string, context?: string): KubeCredentials {
  const file = resolve(path)
  const text = readRequired(file, 'kubeconfig').toString('utf8')
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw invalid(`${file}: invalid YAML: ${(err as Error).message}`, err)
  }
  const root = asRecord(doc)
  if (root === undefined) throw invalid(`${file}: not a kubeconfig (expected a mapping)`)
  const contextName = context ?? optString(root, 'current-context', file)
  if (contextName === undefined) {
    throw invalid(`${file}: no current-context; set registry.context`)
  }
  const ctx = findNamed(root.contexts, contextName, 'context', file)
  const clusterName = optString(ctx, 'cluster', file)
  if (clusterName === undefined) throw invalid(`${file}: context "${contextName}" names no cluster`)
  const cluster = findNamed(root.clusters, clusterName, 'cluster', file)
  const userName = optString(ctx, 'user', file)
  const user = userName === undefined ? {} : findNamed(root.users, userName, 'user', file)
  const base = dirname(file)

  const server = optString(cluster, 'server', file)
  if (server === undefined) throw invalid(`${file}: cluster "${clusterName}" has no server`)
  let url: URL
  try {
    url = new URL(server)
  } catch (err) {
    throw invalid(`${file}: cluster "${clusterName}": invalid server URL ${server}`, err)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw invalid(`${file}: cluster "${clusterName}": server must be an http(s) URL`)
  }
  if (cluster['proxy-url'] !== undefined) {
    throw invalid(`${file}: cluster "${clusterName}": proxy-url is not supported`)
  }
  const insecure = cluster['insecure-skip-tls-verify'] === true
  const ca = dataOrFile(cluster, 'certificate-authority', base, file)
  if (insecure && ca !== undefined) {
    // client-go refuses this combination too: it is almost always a mistake.
    throw invalid(
      `${file}: cluster "${clusterName}": certificate-authority and insecure-skip-tls-verify are exclusive`,
    )
  }
  for (const unsupported of ['exec', 'auth-provider', 'username', 'password']) {
    if (user[unsupported] !== undefined) {
      throw invalid(
        `${file}: user "${userName ?? ''}" uses "${unsupported}", which pfgate does not support; use token, tokenFile or a client certificate`,
      )
    }
  }
  const cert = dataOrFile(user, 'client-certificate', base, file)
  const key = dataOrFile(user, 'client-key', base, file)
  if ((cert === undefined) !== (key === undefined)) {
    throw invalid(
      `${file}: user "${userName ?? ''}": client certificate and key must come together`,
    )
  }
  const token = optString(user, 'token', file)
  const tokenFileRaw = optString(user, 'tokenFile', file)
  const tokenFile =
    tokenFileRaw === undefined
      ? undefined
      : isAbsolute(tokenFileRaw)
        ? tokenFileRaw
        : resolve(base, tokenFileRaw)
  const tlsServerName = optString(cluster, 'tls-server-name', file)
  const namespace = optString(ctx, 'namespace', file)
  return {
    server: server.replace(/\/+$/, ''),
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(tokenFile !== undefined ? { tokenFile } : {}),
    insecureSkipTlsVerify: insecure,
    ...(tlsServerName !== undefined ? { tlsServerName } : {}),
    ...(namespace !== undefined ? { namespace } : {}),
    source: `kubeconfig ${file} (context ${contextName})`,
  }
}

/** Options for {@link BearerTokenSource}. */
export interface BearerTokenSourceOptions {
  token?: string
  tokenFile?: string
  /** Re-read the file when the cached value is older than this (default {@link DEFAULT_TOKEN_REFRESH_MS}). */
  refreshMs?: number
  /** Clock (tests inject one). */
  now?: () => number
}

/**
 * The bearer token for the next request. A token file is read lazily when the
 * cached value is older than `refreshMs` (no timer, so nothing to clean up); a
 * failed re-read keeps the last good token, as the kubelet may be mid-rotation.
 */
export class BearerTokenSource {
  readonly #static: string | undefined
  readonly #file: string | undefined
  readonly #refreshMs: number
  readonly #now: () => number
  #cached: string | undefined
  #readAt = -Infinity

  constructor(options: BearerTokenSourceOptions) {
    this.#static = options.token
    this.#file = options.tokenFile
    this.#refreshMs = options.refreshMs ?? DEFAULT_TOKEN_REFRESH_MS
    this.#now = options.now ?? Date.now
  }

  /** The token to send, or undefined when there is none (client-certificate auth). */
  async get(): Promise<string | undefined> {
    if (this.#file === undefined) return this.#static
    if (this.#cached === undefined || this.#now() - this.#readAt >= this.#refreshMs) {
      try {
        const text = (await readFile(this.#file, 'utf8')).trim()
        if (text !== '') this.#cached = text
        this.#readAt = this.#now()
      } catch (err) {
        if (this.#cached === undefined) {
          throw invalid(`cannot read token file ${this.#file}: ${(err as Error).message}`, err)
        }
      }
    }
    return this.#cached ?? this.#static
  }

  /** Forces a re-read on the next {@link get} (after the API server answered 401). */
  invalidate(): void {
    this.#readAt = -Infinity
  }
}
