/**
 * The OpenID Connect client behind `pfgate login`, on `openid-client` (a certified
 * relying-party library): issuer discovery, the authorization code grant with PKCE (S256)
 * through the user's browser and a loopback redirect (RFC 8252 §7.3: `http://127.0.0.1:<any
 * port>/callback`, the port picked by the OS), the device authorization grant (RFC 8628)
 * for machines without a browser, and the refresh token grant.
 *
 * The bearer token pfgate uses is the ID token (as kubelogin and kube-apiserver's OIDC
 * authenticator do): its `aud` is the client ID, its `iss` the issuer.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import * as client from 'openid-client'
import { Agent, fetch as undiciFetch } from 'undici'
import { appError, describeError } from '../../shared/errors.js'

/** Who to log in with. */
export interface LoginSettings {
  issuer: string
  clientId: string
  /** Confidential clients only (most CLIs are public clients). */
  clientSecret?: string
  /** Scopes besides `openid`. */
  scopes: string[]
  /** PEM CA bundle for the issuer's TLS. */
  caFile?: string
}

/** What a login yields, as cached. */
export interface OidcTokens {
  idToken: string
  /** The ID token's `exp`, ms since epoch. */
  expiresAt: number
  refreshToken?: string
}

function failure(message: string, cause?: unknown): Error {
  return appError('PFG_ERR_CLI_CREDENTIALS', message, cause !== undefined ? { cause } : {})
}

/** Discovers the issuer (its `/.well-known/openid-configuration`). */
export async function discover(s: LoginSettings): Promise<client.Configuration> {
  const agent =
    s.caFile !== undefined ? new Agent({ connect: { ca: readFileSync(s.caFile) } }) : undefined
  const fetchImpl = ((url: string, init: object) =>
    undiciFetch(url, { ...init, ...(agent !== undefined ? { dispatcher: agent } : {}) })) as never
  try {
    return await client.discovery(
      new URL(s.issuer),
      s.clientId,
      s.clientSecret,
      s.clientSecret !== undefined ? client.ClientSecretPost(s.clientSecret) : client.None(),
      { [client.customFetch]: fetchImpl, timeout: 30 },
    )
  } catch (err) {
    throw failure(`cannot discover the OpenID provider ${s.issuer}: ${describeError(err)}`, err)
  }
}

function tokensOf(
  res: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers,
  previousRefresh?: string,
): OidcTokens {
  const idToken = res.id_token
  const claims = res.claims()
  if (idToken === undefined || claims === undefined) {
    throw failure('the OpenID provider returned no ID token (is the "openid" scope allowed?)')
  }
  const refreshToken = res.refresh_token ?? previousRefresh
  return {
    idToken,
    expiresAt: claims.exp * 1000,
    ...(refreshToken !== undefined ? { refreshToken } : {}),
  }
}

/** How the browser flow talks to the user. */
export interface BrowserLoginIo {
  /** Opens the URL in a browser, or tells the user to. */
  open(url: string): void
  /** How long to wait for the browser to come back. */
  timeoutMs: number
  /** The loopback port (0: any free one). */
  port?: number
}

const DONE_PAGE = `<!doctype html><meta charset="utf-8"><title>pfgate login</title>
<p>You are logged in. You can close this window and return to the terminal.</p>`

/**
 * The authorization code grant with PKCE: a one-shot loopback listener receives the
 * redirect; `state` and the PKCE verifier tie it to this login.
 */
export async function browserLogin(
  config: client.Configuration,
  s: LoginSettings,
  io: BrowserLoginIo,
): Promise<OidcTokens> {
  const verifier = client.randomPKCECodeVerifier()
  const challenge = await client.calculatePKCECodeChallenge(verifier)
  const state = client.randomState()
  const nonce = client.randomNonce()
  let settle!: (url: URL) => void
  let fail!: (err: Error) => void
  const arrived = new Promise<URL>((resolve, reject) => {
    settle = resolve
    fail = reject
  })
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (url.pathname !== '/callback') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(DONE_PAGE)
    settle(url)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(io.port ?? 0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  const redirectUri = `http://127.0.0.1:${port}/callback`
  const timer = setTimeout(
    () => fail(failure(`no answer from the browser within ${Math.round(io.timeoutMs / 1000)} s`)),
    io.timeoutMs,
  )
  try {
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: ['openid', ...s.scopes].join(' '),
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state,
      nonce,
    })
    io.open(url.href)
    const callback = await arrived
    const current = new URL(callback.pathname + callback.search, `http://127.0.0.1:${port}`)
    try {
      const res = await client.authorizationCodeGrant(config, current, {
        pkceCodeVerifier: verifier,
        expectedState: state,
        expectedNonce: nonce,
        idTokenExpected: true,
      })
      return tokensOf(res)
    } catch (err) {
      throw failure(`the login failed: ${describeError(err)}`, err)
    }
  } finally {
    clearTimeout(timer)
    server.closeAllConnections()
    server.close()
  }
}

/** How the device flow talks to the user. */
export interface DeviceLoginIo {
  /** Tells the user where to go and which code to enter. */
  show(verificationUri: string, userCode: string, complete: string | undefined): void
}

/** The device authorization grant: the user confirms a code on any device; we poll. */
export async function deviceLogin(
  config: client.Configuration,
  s: LoginSettings,
  io: DeviceLoginIo,
): Promise<OidcTokens> {
  try {
    const start = await client.initiateDeviceAuthorization(config, {
      scope: ['openid', ...s.scopes].join(' '),
    })
    io.show(start.verification_uri, start.user_code, start.verification_uri_complete)
    return tokensOf(await client.pollDeviceAuthorizationGrant(config, start))
  } catch (err) {
    throw failure(`the device login failed: ${describeError(err)}`, err)
  }
}

/** A new ID token from the refresh token. */
export async function refreshLogin(
  config: client.Configuration,
  refreshToken: string,
): Promise<OidcTokens> {
  try {
    return tokensOf(await client.refreshTokenGrant(config, refreshToken), refreshToken)
  } catch (err) {
    throw failure(`refreshing the login failed: ${describeError(err)}`, err)
  }
}
