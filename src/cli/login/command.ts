/**
 * `pfgate login`: single sign-on for the CLI and kubectl through an OpenID provider.
 *
 * - `pfgate login --issuer URL --client-id ID` logs in (browser with PKCE, or `--device`)
 *   and caches the tokens;
 * - `pfgate login get-token …` is the exec credential plugin: it prints an
 *   `ExecCredential` with the cached ID token, refreshed with the refresh token when it is
 *   about to expire, or logs in first when the plugin may talk to the user
 *   (`KUBERNETES_EXEC_INFO` says interactive) — else it fails with "log in again";
 * - `pfgate login setup-kubeconfig …` writes the kubeconfig user entry that runs
 *   `get-token` (and, with `--server`, a cluster and context for the gateway).
 *
 * @module
 */
import { spawn } from 'node:child_process'
import {
  accessSync,
  constants as fsc,
  existsSync,
  readFileSync,
  realpathSync,
  writeFileSync,
} from 'node:fs'
import { homedir } from 'node:os'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { Writable } from 'node:stream'
import type * as client from 'openid-client'
import { parse as parseYaml, stringify as toYaml } from 'yaml'
import { describeError } from '../../shared/errors.js'
import { kubeconfigFiles } from '../kubeconfig.js'
import { browserLogin, deviceLogin, discover, refreshLogin } from './oidc.js'
import type { LoginSettings, OidcTokens } from './oidc.js'
import { cacheFile, clearCache, readCache, withCacheLock, writeCache } from './token-cache.js'

export const LOGIN_USAGE = `Log in through an OpenID Connect provider, for pfgate and kubectl.

Usage:
  pfgate login --issuer URL --client-id ID [--device] [options]
  pfgate login get-token --issuer URL --client-id ID [options]     (the exec plugin)
  pfgate login setup-kubeconfig --issuer URL --client-id ID [--user NAME]
        [--server URL --certificate-authority FILE [--context NAME]] [--kubeconfig FILE]
  pfgate login logout --issuer URL --client-id ID

Options:
      --issuer URL           the OpenID provider (exactly its "iss")
      --client-id ID         the client registered for pfgate (a public client)
      --client-secret S      for a confidential client (avoid: it ends up in the kubeconfig)
      --scope S              an extra scope (repeat; "openid" is always asked for)
      --ca-file FILE         the CA that verifies the provider
      --device               the device flow: a code to enter on any device (no local browser)
      --listen-port N        the loopback port for the browser's redirect (default: any)
      --browser-timeout DUR  how long to wait for the browser or device (default 5m)

The browser is opened with $BROWSER (or xdg-open/open); the URL is also printed.
Tokens are cached under $PFGATE_CACHE_DIR, $XDG_CACHE_HOME/pfgate/oidc or ~/.cache/pfgate/oidc.
`

interface LoginIo {
  stdout: Writable
  stderr: Writable
  env: NodeJS.ProcessEnv
}

/** How early an ID token is refreshed: with less than this left, get-token refreshes it. */
const REFRESH_BEFORE_MS = 60_000

function settingsFrom(values: Record<string, unknown>): LoginSettings {
  const issuer = values.issuer
  const clientId = values['client-id']
  if (typeof issuer !== 'string' || issuer === '') throw new UsageError('--issuer is required')
  if (typeof clientId !== 'string' || clientId === '')
    throw new UsageError('--client-id is required')
  if (!issuer.startsWith('https://')) throw new UsageError('--issuer must be an https:// URL')
  return {
    issuer,
    clientId,
    scopes: (values.scope as string[] | undefined) ?? [],
    ...(typeof values['client-secret'] === 'string'
      ? { clientSecret: values['client-secret'] }
      : {}),
    ...(typeof values['ca-file'] === 'string' ? { caFile: resolve(values['ca-file']) } : {}),
  }
}

class UsageError extends Error {}

function duration(v: unknown, fallbackMs: number): number {
  if (typeof v !== 'string') return fallbackMs
  const m = /^(\d+)(ms|s|m|h)$/.exec(v)
  if (m === null) throw new UsageError(`invalid duration ${JSON.stringify(v)} (use 30s, 5m …)`)
  const n = Number(m[1])
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h']
}

/** Opens `url` with $BROWSER or the desktop's opener; always prints it too. */
function openBrowser(url: string, io: LoginIo): void {
  io.stderr.write(`Open this URL in a browser to log in:\n\n  ${url}\n\n`)
  const cmd =
    io.env.BROWSER !== undefined && io.env.BROWSER !== ''
      ? io.env.BROWSER
      : process.platform === 'darwin'
        ? 'open'
        : 'xdg-open'
  try {
    const child = spawn(cmd, [url], { stdio: 'ignore', detached: true, env: io.env })
    child.on('error', () => undefined) // no opener: the printed URL is enough
    child.unref()
  } catch {
    // same
  }
}

async function interactiveLogin(
  config: client.Configuration,
  s: LoginSettings,
  values: Record<string, unknown>,
  io: LoginIo,
): Promise<OidcTokens> {
  const timeoutMs = duration(values['browser-timeout'], 5 * 60_000)
  if (values.device === true) {
    return deviceLogin(config, s, {
      show(uri, code, complete) {
        io.stderr.write(
          `To log in, open ${uri} on any device and enter the code ${code}` +
            (complete !== undefined ? `\n(or open ${complete})` : '') +
            '\n',
        )
      },
    })
  }
  return browserLogin(config, s, {
    open: (url) => openBrowser(url, io),
    timeoutMs,
    ...(typeof values['listen-port'] === 'string' ? { port: Number(values['listen-port']) } : {}),
  })
}

/** Is the plugin allowed to talk to the user (KUBERNETES_EXEC_INFO spec.interactive)? */
function execInteractive(env: NodeJS.ProcessEnv): boolean {
  const info = env.KUBERNETES_EXEC_INFO
  if (info === undefined || info === '') return process.stdin.isTTY
  try {
    return (JSON.parse(info) as { spec?: { interactive?: unknown } }).spec?.interactive === true
  } catch {
    return false
  }
}

function execApiVersion(env: NodeJS.ProcessEnv): string {
  try {
    const v = (JSON.parse(env.KUBERNETES_EXEC_INFO ?? '') as { apiVersion?: unknown }).apiVersion
    if (v === 'client.authentication.k8s.io/v1beta1') return v
  } catch {
    // absent or invalid: v1
  }
  return 'client.authentication.k8s.io/v1'
}

/** A token good for a while: from the cache, refreshed, or (when allowed) from a new login. */
async function getToken(
  s: LoginSettings,
  values: Record<string, unknown>,
  io: LoginIo,
): Promise<OidcTokens> {
  const file = cacheFile(io.env, s)
  return withCacheLock(file, 30_000, async () => {
    const cached = readCache(file)
    if (cached !== undefined && cached.expiresAt - Date.now() > REFRESH_BEFORE_MS) return cached
    let config: client.Configuration | undefined
    if (cached?.refreshToken !== undefined) {
      try {
        config = await discover(s)
        const fresh = await refreshLogin(config, cached.refreshToken)
        writeCache(file, fresh)
        return fresh
      } catch (err) {
        io.stderr.write(`pfgate login: ${describeError(err)}\n`)
      }
    }
    if (!execInteractive(io.env)) {
      const when =
        cached !== undefined
          ? `the login expired at ${new Date(cached.expiresAt).toISOString()}`
          : 'not logged in'
      throw new LoginRequired(
        `${when}; log in again: pfgate login --issuer ${s.issuer} --client-id ${s.clientId}`,
      )
    }
    config ??= await discover(s)
    const tokens = await interactiveLogin(config, s, values, io)
    writeCache(file, tokens)
    return tokens
  })
}

class LoginRequired extends Error {}

/** The command that runs `get-token`: this pfgate, by absolute path when it can be run so. */
function selfCommand(): { command: string; args: string[] } {
  const script = process.argv[1]
  if (script !== undefined) {
    try {
      const path = realpathSync(script)
      accessSync(path, fsc.X_OK)
      return { command: path, args: [] }
    } catch {
      // not executable: run it with this node
      if (existsSync(script)) return { command: process.execPath, args: [realpathSync(script)] }
    }
  }
  return { command: 'pfgate', args: [] }
}

interface Named {
  name: string
  [k: string]: unknown
}

function upsert(list: unknown, entry: Named): Named[] {
  const items = Array.isArray(list) ? (list as Named[]) : []
  const i = items.findIndex((x) => x.name === entry.name)
  if (i >= 0) items[i] = entry
  else items.push(entry)
  return items
}

/** Writes the kubeconfig user (and optionally cluster and context) for `get-token`. */
function setupKubeconfig(s: LoginSettings, values: Record<string, unknown>, io: LoginIo): string {
  const path =
    typeof values.kubeconfig === 'string'
      ? values.kubeconfig
      : (kubeconfigFiles(io.env)[0] ?? resolve(homedir(), '.kube', 'config'))
  const doc = (existsSync(path) ? (parseYaml(readFileSync(path, 'utf8')) ?? {}) : {}) as Record<
    string,
    unknown
  >
  doc.apiVersion ??= 'v1'
  doc.kind ??= 'Config'
  const user = typeof values.user === 'string' ? values.user : 'oidc'
  const self = selfCommand()
  const args = [
    ...self.args,
    'login',
    'get-token',
    '--issuer',
    s.issuer,
    '--client-id',
    s.clientId,
    ...s.scopes.flatMap((sc) => ['--scope', sc]),
    ...(s.caFile !== undefined ? ['--ca-file', s.caFile] : []),
    ...(s.clientSecret !== undefined ? ['--client-secret', s.clientSecret] : []),
    ...(values.device === true ? ['--device'] : []),
  ]
  doc.users = upsert(doc.users, {
    name: user,
    user: {
      exec: {
        apiVersion: 'client.authentication.k8s.io/v1',
        command: self.command,
        args,
        interactiveMode: 'IfAvailable',
        provideClusterInfo: false,
        installHint: 'pfgate login needs pfgate: see the README (Install)',
      },
    },
  })
  if (typeof values.server === 'string') {
    const name = typeof values.context === 'string' ? values.context : 'pfgate'
    const ca = values['certificate-authority']
    doc.clusters = upsert(doc.clusters, {
      name,
      cluster: {
        server: values.server,
        ...(typeof ca === 'string'
          ? { 'certificate-authority-data': readFileSync(ca).toString('base64') }
          : {}),
      },
    })
    doc.contexts = upsert(doc.contexts, { name, context: { cluster: name, user } })
    doc['current-context'] = name
  }
  writeFileSync(path, toYaml(doc), { mode: 0o600 })
  return path
}

/** `pfgate login …`: 0 done, 1 failed, 2 usage. */
export async function runLogin(argv: string[], io: LoginIo): Promise<number> {
  const sub = ['get-token', 'setup-kubeconfig', 'logout'].includes(argv[0] ?? '')
    ? argv[0]
    : undefined
  let values: Record<string, unknown>
  try {
    ;({ values } = parseArgs({
      args: sub !== undefined ? argv.slice(1) : argv,
      options: {
        issuer: { type: 'string' },
        'client-id': { type: 'string' },
        'client-secret': { type: 'string' },
        scope: { type: 'string', multiple: true },
        'ca-file': { type: 'string' },
        device: { type: 'boolean' },
        'listen-port': { type: 'string' },
        'browser-timeout': { type: 'string' },
        kubeconfig: { type: 'string' },
        user: { type: 'string' },
        server: { type: 'string' },
        'certificate-authority': { type: 'string' },
        context: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    io.stderr.write(`error: ${(err as Error).message}\n\n${LOGIN_USAGE}`)
    return 2
  }
  if (values.help === true) {
    io.stdout.write(LOGIN_USAGE)
    return 0
  }
  let s: LoginSettings
  try {
    s = settingsFrom(values)
    duration(values['browser-timeout'], 0)
  } catch (err) {
    io.stderr.write(`error: ${(err as Error).message}\n\n${LOGIN_USAGE}`)
    return 2
  }
  try {
    switch (sub) {
      case 'get-token': {
        const t = await getToken(s, values, io)
        io.stdout.write(
          JSON.stringify({
            kind: 'ExecCredential',
            apiVersion: execApiVersion(io.env),
            spec: {},
            status: { token: t.idToken, expirationTimestamp: new Date(t.expiresAt).toISOString() },
          }) + '\n',
        )
        return 0
      }
      case 'setup-kubeconfig': {
        const path = setupKubeconfig(s, values, io)
        io.stdout.write(
          `kubeconfig ${path}: user "${typeof values.user === 'string' ? values.user : 'oidc'}" runs pfgate login get-token\n`,
        )
        return 0
      }
      case 'logout':
        clearCache(cacheFile(io.env, s))
        io.stdout.write('logged out (cached tokens removed)\n')
        return 0
      default: {
        const config = await discover(s)
        const tokens = await interactiveLogin(config, s, values, io)
        writeCache(cacheFile(io.env, s), tokens)
        io.stdout.write(
          `logged in to ${s.issuer}; the token is valid until ${new Date(tokens.expiresAt).toISOString()}` +
            (tokens.refreshToken !== undefined ? ' and is refreshed automatically' : '') +
            '\n',
        )
        return 0
      }
    }
  } catch (err) {
    io.stderr.write(`error: ${err instanceof LoginRequired ? err.message : describeError(err)}\n`)
    return 1
  }
}
