/**
 * A real OpenID provider for tests: the `oidc-provider` package (a certified
 * implementation) over HTTPS on loopback (a test CA, like the fake API server's), with
 * one public native client for `pfgate login` (authorization code + PKCE with loopback
 * redirects on any port, refresh tokens, the device authorization grant), accounts whose
 * ID tokens carry `sub` and `groups`, short token lifetimes, and key rotation.
 *
 * The browser's part is played by {@link TestBrowser}: it follows redirects with a cookie
 * jar and fills in the provider's own development sign-in form (`devInteractions`) and
 * device-flow forms and confirms the consent screen a native client always gets.
 *
 * @module
 */
import { createServer } from 'node:https'
import type { Server } from 'node:https'
import type { Socket } from 'node:net'
import { writeFileSync } from 'node:fs'
import { generateKeyPair, exportJWK } from 'jose'
import type { JWK } from 'jose'
import Provider from 'oidc-provider'
import { Agent, fetch as undiciFetch } from 'undici'
import { generateFakeKubePki } from './fake-kube-apiserver.js'
import type { FakeKubePki } from './fake-kube-apiserver.js'

export const TEST_CLIENT_ID = 'pfgate-cli'

/** Options of {@link TestOidcProvider.start}. */
export interface TestOidcProviderOptions {
  /** ID and access token lifetime, seconds (default 30). */
  idTokenTtlS?: number
  /** Groups per account (default: `['pfgate:developers']`). */
  groups?: Record<string, string[]>
}

async function signingKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
  const jwk = await exportJWK(privateKey)
  return {
    ...jwk,
    alg: 'ES256',
    use: 'sig',
    kid: `k-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
  }
}

/** A running provider. */
export class TestOidcProvider {
  readonly pki: FakeKubePki
  issuer = ''
  /** Kids, newest first; the first signs. */
  keys: JWK[] = []
  readonly #options: TestOidcProviderOptions
  #server!: Server
  readonly #sockets = new Set<Socket>()
  #provider!: Provider
  /** Requests to the key set (jwks_uri), counted. */
  jwksFetches = 0

  private constructor(options: TestOidcProviderOptions, pki: FakeKubePki) {
    this.#options = options
    this.pki = pki
  }

  static async start(options: TestOidcProviderOptions = {}): Promise<TestOidcProvider> {
    const p = new TestOidcProvider(options, await generateFakeKubePki())
    p.#server = createServer({ key: p.pki.serverKey, cert: p.pki.serverCert }, (req, res) => {
      if (req.url?.startsWith('/jwks') === true) p.jwksFetches++
      void p.#provider.callback()(req, res)
    })
    p.#server.on('connection', (s: Socket) => {
      p.#sockets.add(s)
      s.on('close', () => p.#sockets.delete(s))
    })
    p.#server.on('tlsClientError', () => undefined)
    await new Promise<void>((r) => p.#server.listen(0, '127.0.0.1', r))
    const addr = p.#server.address()
    if (addr === null || typeof addr === 'string') throw new Error('no address')
    p.issuer = `https://127.0.0.1:${addr.port}`
    p.keys = [await signingKey()]
    p.#build()
    return p
  }

  /** Writes the CA that verifies the provider to `path`. */
  writeCa(path: string): string {
    writeFileSync(path, this.pki.caCert)
    return path
  }

  /** A new signing key; the old one stays published for tokens already issued. */
  async rotateKeys(options: { dropOld?: boolean } = {}): Promise<void> {
    const next = await signingKey()
    this.keys = options.dropOld === true ? [next] : [next, ...this.keys]
    this.#build()
  }

  #build(): void {
    const ttl = this.#options.idTokenTtlS ?? 30
    const groups = this.#options.groups ?? {}
    const provider = new Provider(this.issuer, {
      clients: [
        {
          client_id: TEST_CLIENT_ID,
          application_type: 'native',
          token_endpoint_auth_method: 'none',
          redirect_uris: ['http://127.0.0.1/callback'],
          grant_types: [
            'authorization_code',
            'refresh_token',
            'urn:ietf:params:oauth:grant-type:device_code',
          ],
          response_types: ['code'],
          id_token_signed_response_alg: 'ES256',
        },
      ],
      jwks: { keys: this.keys as never },
      features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
      claims: { openid: ['sub'], groups: ['groups'] },
      scopes: ['openid', 'offline_access', 'groups'],
      conformIdTokenClaims: false,
      pkce: { required: () => true },
      issueRefreshToken: (_ctx: unknown, client: { grantTypeAllowed(t: string): boolean }) =>
        Promise.resolve(client.grantTypeAllowed('refresh_token')),
      ttl: {
        IdToken: ttl,
        AccessToken: ttl,
        RefreshToken: 86_400,
        DeviceCode: 600,
        Grant: 86_400,
        Interaction: 600,
        Session: 86_400,
      },
      cookies: { keys: ['pfgate-test-cookie-key'] },
      findAccount: (_ctx: unknown, id: string) =>
        Promise.resolve({
          accountId: id,
          claims: () => Promise.resolve({ sub: id, groups: groups[id] ?? ['pfgate:developers'] }),
        }),
      // The first-party CLI needs no consent screen.
      loadExistingGrant: async (ctx: {
        oidc: {
          provider: Provider
          client: { clientId: string }
          session: { accountId: string; grantIdFor(id: string): string | undefined }
          result?: { consent?: { grantId?: string } }
        }
      }) => {
        const o = ctx.oidc
        const id = o.result?.consent?.grantId ?? o.session.grantIdFor(o.client.clientId)
        if (id !== undefined) {
          const found = await o.provider.Grant.find(id)
          if (found !== undefined) return found
        }
        const grant = new o.provider.Grant({
          clientId: o.client.clientId,
          accountId: o.session.accountId,
        })
        grant.addOIDCScope('openid groups offline_access')
        grant.addOIDCClaims(['groups'])
        await grant.save()
        return grant
      },
    } as never)
    provider.on('server_error', () => undefined)
    this.#provider = provider
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy()
    await new Promise<void>((r) => this.#server.close(() => r()))
  }
}

interface Cookie {
  value: string
  path: string
}

/**
 * What a user's browser does at the provider: follows redirects keeping cookies, signs in
 * through the provider's form, confirms device codes. Stops at a URL outside the provider
 * (the CLI's loopback redirect), which it then requests, as a browser would.
 */
export class TestBrowser {
  readonly #agent: Agent
  readonly #jar = new Map<string, Cookie>()
  readonly #issuer: string
  /** Every URL visited. */
  readonly visited: string[] = []

  constructor(provider: TestOidcProvider) {
    this.#issuer = provider.issuer
    this.#agent = new Agent({ connect: { ca: provider.pki.caCert } })
  }

  #cookieHeader(url: URL): string {
    return [...this.#jar.entries()]
      .filter(([, c]) => url.pathname.startsWith(c.path))
      .map(([k, c]) => `${k}=${c.value}`)
      .join('; ')
  }

  #store(headers: Headers): void {
    for (const line of headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';')
      const eq = (pair ?? '').indexOf('=')
      const name = (pair ?? '').slice(0, eq).trim()
      const value = (pair ?? '').slice(eq + 1).trim()
      const path =
        attrs
          .map((a) => a.trim())
          .find((a) => a.toLowerCase().startsWith('path='))
          ?.slice(5) ?? '/'
      const expired = attrs.some((a) => /expires=Thu, 01 Jan 1970/i.test(a))
      if (expired || value === '') this.#jar.delete(name)
      else this.#jar.set(name, { value, path })
    }
  }

  /** One request with cookies; returns status, location and body. */
  async request(
    url: string,
    form?: Record<string, string>,
  ): Promise<{ status: number; location?: string; body: string }> {
    const u = new URL(url)
    this.visited.push(url)
    const res = await undiciFetch(u, {
      method: form !== undefined ? 'POST' : 'GET',
      redirect: 'manual',
      dispatcher: u.protocol === 'https:' ? this.#agent : undefined,
      headers: {
        cookie: this.#cookieHeader(u),
        ...(form !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      ...(form !== undefined ? { body: new URLSearchParams(form).toString() } : {}),
    })
    this.#store(res.headers)
    const location = res.headers.get('location') ?? undefined
    const body = await res.text()
    return {
      status: res.status,
      ...(location !== undefined ? { location: new URL(location, u).href } : {}),
      body,
    }
  }

  /**
   * Follows redirects from `url`, signing in as `login` when the provider asks; returns the
   * last answer (the CLI's loopback page, or the provider's device-flow success page).
   */
  async signIn(url: string, login: string): Promise<{ url: string; status: number; body: string }> {
    let next: string | undefined = url
    let form: Record<string, string> | undefined
    for (let hops = 0; hops < 20 && next !== undefined; hops++) {
      const current: string = next
      const r = await this.request(current, form)
      form = undefined
      if (r.location !== undefined && r.status >= 300 && r.status < 400) {
        next = r.location
        continue
      }
      if (current.startsWith(this.#issuer) && /name="prompt" value="login"/.test(r.body)) {
        const action = /<form[^>]*action="([^"]+)"/.exec(r.body)?.[1]
        if (action === undefined) throw new Error('sign-in form without an action')
        next = new URL(action, current).href
        form = { prompt: 'login', login, password: 'any' }
        continue
      }
      if (current.startsWith(this.#issuer) && /name="prompt" value="consent"/.test(r.body)) {
        // A native client is always asked to confirm (oidc-provider: native_client_prompt).
        const action = /<form[^>]*action="([^"]+)"/.exec(r.body)?.[1]
        if (action === undefined) throw new Error('consent form without an action')
        next = new URL(action, current).href
        form = { prompt: 'consent' }
        continue
      }
      return { url: current, status: r.status, body: r.body }
    }
    throw new Error(`too many redirects from ${url}`)
  }

  /** Enters and confirms a device flow's user code, then signs in as `login`. */
  async confirmDevice(verificationUri: string, userCode: string, login: string): Promise<string> {
    const page = await this.request(verificationUri)
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.body)?.[1]
    if (xsrf === undefined) throw new Error(`no xsrf on the device page:\n${page.body}`)
    const confirm = await this.request(verificationUri, { xsrf, user_code: userCode })
    const xsrf2 = /name="xsrf" value="([^"]+)"/.exec(confirm.body)?.[1]
    if (xsrf2 === undefined) throw new Error(`no confirmation form:\n${confirm.body}`)
    const action = /<form[^>]*action="([^"]+)"/.exec(confirm.body)?.[1] ?? verificationUri
    const r = await this.request(new URL(action, verificationUri).href, {
      xsrf: xsrf2,
      user_code: userCode,
      confirm: 'yes',
    })
    if (r.location === undefined)
      throw new Error(`device confirmation did not redirect:\n${r.body}`)
    return (await this.signIn(r.location, login)).body
  }

  close(): Promise<void> {
    return this.#agent.close()
  }
}
