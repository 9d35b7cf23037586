/**
 * kubeconfig loading with kubectl's rules: `--kubeconfig` (one file), else the
 * `KUBECONFIG` list (merged: the first file to define a name wins, the first
 * `current-context` wins), else `~/.kube/config`; then the context (`--context`
 * or current), its cluster (server, CA, TLS options) and user (bearer token,
 * token file, client certificate, exec credential plugin), with flags overriding
 * each field. What the user entry yields is turned into a credential provider by
 * `src/cli/credentials/`.
 *
 * @module
 */
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, isAbsolute, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { appError } from '../shared/errors.js'
import { parseExecConfig } from './credentials/exec-plugin.js'
import type { ExecClusterInfo, ExecConfig } from './credentials/exec-plugin.js'

/** What a client needs to reach the gateway. */
export interface ClientConfig {
  /** `https://host:port[/prefix]` */
  server: string
  namespace: string
  /** PEM CA bundle, when one is configured. */
  ca?: Buffer
  insecureSkipTlsVerify: boolean
  tlsServerName?: string
  token?: string
  /** A file holding the token, re-read when it changes (kubeconfig `tokenFile`). */
  tokenFile?: string
  cert?: Buffer
  key?: Buffer
  /** An exec credential plugin (kubeconfig `user.exec`), used when there is no token. */
  exec?: ExecConfig
  /** What the plugin is told about the cluster when `provideClusterInfo` is set. */
  execCluster?: ExecClusterInfo
  /** Where each part came from (for error messages). */
  source: string
}

/** Flags that override the kubeconfig. */
export interface ClientOverrides {
  kubeconfig?: string
  context?: string
  server?: string
  token?: string
  certificateAuthority?: string
  insecureSkipTlsVerify?: boolean
  namespace?: string
}

/** The flags every CLI command that talks to the gateway takes (for `util.parseArgs`). */
export const CONNECTION_FLAGS = {
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  server: { type: 'string', short: 's' },
  token: { type: 'string' },
  'certificate-authority': { type: 'string' },
  'insecure-skip-tls-verify': { type: 'boolean' },
} as const

/** The overrides {@link CONNECTION_FLAGS} (and `namespace`, when a command has it) gave. */
export function overridesFromFlags(
  values: Record<string, string | boolean | (string | boolean)[] | undefined>,
): ClientOverrides {
  const overrides: ClientOverrides = {}
  const str = (k: string): string | undefined => {
    const v = values[k]
    return typeof v === 'string' ? v : undefined
  }
  const set = <K extends keyof ClientOverrides>(k: K, v: ClientOverrides[K] | undefined): void => {
    if (v !== undefined) overrides[k] = v
  }
  set('kubeconfig', str('kubeconfig'))
  set('context', str('context'))
  set('server', str('server'))
  set('token', str('token'))
  set('certificateAuthority', str('certificate-authority'))
  if (values['insecure-skip-tls-verify'] === true) overrides.insecureSkipTlsVerify = true
  set('namespace', str('namespace'))
  return overrides
}

interface NamedMap<T> {
  name: string
  value: T
  file: string
}

interface RawCluster {
  server?: string
  'certificate-authority'?: string
  'certificate-authority-data'?: string
  'insecure-skip-tls-verify'?: boolean
  'tls-server-name'?: string
  extensions?: { name?: string; extension?: unknown }[]
}
interface RawUser {
  token?: string
  tokenFile?: string
  'client-certificate'?: string
  'client-certificate-data'?: string
  'client-key'?: string
  'client-key-data'?: string
  exec?: unknown
  'auth-provider'?: unknown
}
interface RawContext {
  cluster?: string
  user?: string
  namespace?: string
}

function fail(message: string): never {
  throw appError('PFG_ERR_CLI_KUBECONFIG', message)
}

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    return fail(`cannot read ${what} ${path}: ${(err as Error).message}`)
  }
}

function list<T>(
  doc: Record<string, unknown>,
  key: string,
  inner: string,
  file: string,
): NamedMap<T>[] {
  const items = doc[key]
  if (items === undefined || items === null) return []
  if (!Array.isArray(items)) fail(`${file}: "${key}" must be a list`)
  return items.map((item: unknown, i) => {
    const o = item as Record<string, unknown> | null
    if (o === null || typeof o.name !== 'string') fail(`${file}: ${key}[${i}] has no name`)
    return { name: o.name, value: (o[inner] ?? {}) as T, file }
  })
}

/** The kubeconfig files in effect, in precedence order. */
export function kubeconfigFiles(env: NodeJS.ProcessEnv, explicit?: string): string[] {
  if (explicit !== undefined && explicit !== '') return [explicit]
  const fromEnv = env.KUBECONFIG
  if (fromEnv !== undefined && fromEnv !== '') {
    return fromEnv.split(':').filter((p) => p !== '')
  }
  return [resolve(env.HOME ?? homedir(), '.kube', 'config')]
}

/** Loads the client configuration (kubeconfig + flags). */
export function loadClientConfig(
  overrides: ClientOverrides,
  env: NodeJS.ProcessEnv = process.env,
): ClientConfig {
  const files = kubeconfigFiles(env, overrides.kubeconfig)
  const clusters = new Map<string, NamedMap<RawCluster>>()
  const users = new Map<string, NamedMap<RawUser>>()
  const contexts = new Map<string, NamedMap<RawContext>>()
  let current: string | undefined
  let loaded = 0
  for (const file of files) {
    if (!existsSync(file)) {
      // kubectl: an explicit --kubeconfig must exist; missing KUBECONFIG entries are skipped.
      if (overrides.kubeconfig !== undefined) fail(`kubeconfig ${file} does not exist`)
      continue
    }
    let doc: Record<string, unknown>
    try {
      doc = (parseYaml(readFileSync(file, 'utf8')) ?? {}) as Record<string, unknown>
    } catch (err) {
      return fail(`${file}: invalid YAML: ${(err as Error).message}`)
    }
    loaded++
    for (const c of list<RawCluster>(doc, 'clusters', 'cluster', file))
      if (!clusters.has(c.name)) clusters.set(c.name, c)
    for (const u of list<RawUser>(doc, 'users', 'user', file))
      if (!users.has(u.name)) users.set(u.name, u)
    for (const c of list<RawContext>(doc, 'contexts', 'context', file))
      if (!contexts.has(c.name)) contexts.set(c.name, c)
    const cc = doc['current-context']
    if (current === undefined && typeof cc === 'string' && cc !== '') current = cc
  }

  const contextName = overrides.context ?? current
  let context: NamedMap<RawContext> | undefined
  if (contextName !== undefined) {
    context = contexts.get(contextName)
    if (
      context === undefined &&
      (overrides.server === undefined || overrides.context !== undefined)
    ) {
      fail(
        `context "${contextName}" does not exist${loaded === 0 ? ' (no kubeconfig file found)' : ''}`,
      )
    }
  }
  const clusterName = context?.value.cluster
  const cluster = clusterName !== undefined ? clusters.get(clusterName) : undefined
  if (clusterName !== undefined && cluster === undefined && overrides.server === undefined) {
    fail(`cluster "${clusterName}" of context "${contextName ?? ''}" does not exist`)
  }
  const userName = context?.value.user
  const user = userName !== undefined ? users.get(userName) : undefined

  const server = overrides.server ?? cluster?.value.server
  if (server === undefined || server === '') {
    fail(
      loaded === 0
        ? `no kubeconfig found (looked at ${files.join(', ')}) and no --server given`
        : 'no server: the context has no cluster server and no --server was given',
    )
  }
  let url: URL
  try {
    url = new URL(server)
  } catch {
    return fail(`invalid server URL ${JSON.stringify(server)}`)
  }
  if (url.protocol !== 'https:') {
    fail(`server ${server} must use https: tokens are only ever sent over TLS`)
  }

  const rel = (p: string, file: string): string => (isAbsolute(p) ? p : resolve(dirname(file), p))
  const cfg: ClientConfig = {
    server: server.replace(/\/+$/, ''),
    namespace: overrides.namespace ?? (context?.value.namespace || 'default'),
    insecureSkipTlsVerify:
      overrides.insecureSkipTlsVerify ?? cluster?.value['insecure-skip-tls-verify'] ?? false,
    source: files.join(':'),
  }
  if (overrides.certificateAuthority !== undefined) {
    cfg.ca = readFile(overrides.certificateAuthority, 'certificate authority')
  } else if (cluster !== undefined && overrides.server === undefined) {
    const c = cluster.value
    if (c['certificate-authority-data'] !== undefined) {
      cfg.ca = Buffer.from(c['certificate-authority-data'], 'base64')
    } else if (c['certificate-authority'] !== undefined) {
      cfg.ca = readFile(rel(c['certificate-authority'], cluster.file), 'certificate authority')
    }
  }
  if (cluster?.value['tls-server-name'] !== undefined)
    cfg.tlsServerName = cluster.value['tls-server-name']

  if (overrides.token !== undefined) {
    cfg.token = overrides.token
  } else if (user !== undefined) {
    const u = user.value
    if (u.token !== undefined) cfg.token = u.token
    else if (u.tokenFile !== undefined) {
      cfg.tokenFile = rel(u.tokenFile, user.file)
      // Read once now so a missing file fails at start-up; the provider re-reads it.
      cfg.token = readFile(cfg.tokenFile, 'token file').toString('utf8').trim()
    }
    if (u['client-certificate-data'] !== undefined)
      cfg.cert = Buffer.from(u['client-certificate-data'], 'base64')
    else if (u['client-certificate'] !== undefined)
      cfg.cert = readFile(rel(u['client-certificate'], user.file), 'client certificate')
    if (u['client-key-data'] !== undefined) cfg.key = Buffer.from(u['client-key-data'], 'base64')
    else if (u['client-key'] !== undefined)
      cfg.key = readFile(rel(u['client-key'], user.file), 'client key')
    if (u['auth-provider'] !== undefined && u.exec !== undefined) {
      fail(`user "${userName ?? ''}" sets both exec and auth-provider`)
    }
    if (u.exec !== undefined && u.exec !== null) {
      cfg.exec = parseExecConfig(u.exec, `user "${userName ?? ''}" in ${user.file}`, (p) =>
        rel(p, user.file),
      )
      cfg.execCluster = {
        server: cfg.server,
        ...(cfg.ca !== undefined ? { certificateAuthorityData: cfg.ca.toString('base64') } : {}),
        ...(cfg.insecureSkipTlsVerify ? { insecureSkipTLSVerify: true } : {}),
        ...(cfg.tlsServerName !== undefined ? { tlsServerName: cfg.tlsServerName } : {}),
        ...execExtension(cluster?.value),
      }
    } else if (
      cfg.token === undefined &&
      cfg.cert === undefined &&
      u['auth-provider'] !== undefined
    ) {
      fail(
        `user "${userName ?? ''}" uses an auth-provider plugin, which pfgate does not run (kubectl removed them too); use an exec plugin or a token`,
      )
    }
  }
  return cfg
}

/** The cluster's `client.authentication.k8s.io/exec` extension, passed to the plugin as `config`. */
function execExtension(cluster: RawCluster | undefined): { config?: unknown } {
  const ext = cluster?.extensions?.find((e) => e.name === 'client.authentication.k8s.io/exec')
  return ext?.extension !== undefined ? { config: ext.extension } : {}
}
