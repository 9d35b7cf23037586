/**
 * A minimal client for the Kubernetes API's review resources (`TokenReview`,
 * `SubjectAccessReview`): `POST` one JSON object, read one back. Credentials come from a
 * kubeconfig or the pod's service account (src/gateway/registry/kube-credentials.ts); a
 * token file is re-read as the registry does.
 *
 * Every failure — the server unreachable, too slow, answering with an error status or
 * with something that is not the expected object — is `PFG_ERR_AUTH_UNAVAILABLE` with a
 * message for the gateway's log (never a token: requests are not logged), so that callers
 * fail closed.
 *
 * @module
 */
import { Pool } from 'undici'
import { appError, describeError } from '../../shared/errors.js'
import { BearerTokenSource } from '../registry/kube-credentials.js'
import type { KubeCredentials } from '../registry/kube-credentials.js'

/** The most bytes of an answer read. */
const MAX_ANSWER_BYTES = 256 * 1024

/** Options of {@link KubeReviewClient}. */
export interface KubeReviewClientOptions {
  credentials: KubeCredentials
  /** Each review's deadline (connect, headers and body). */
  timeoutMs: number
  /** Connections to the API server. */
  connections?: number
}

/** Creates review objects on one API server. */
export class KubeReviewClient {
  readonly #creds: KubeCredentials
  readonly #pool: Pool
  readonly #basePath: string
  readonly #tokens: BearerTokenSource
  readonly #timeoutMs: number

  constructor(options: KubeReviewClientOptions) {
    const c = options.credentials
    this.#creds = c
    const url = new URL(c.server)
    this.#basePath = url.pathname.replace(/\/+$/, '')
    this.#timeoutMs = options.timeoutMs
    this.#tokens = new BearerTokenSource({
      ...(c.token !== undefined ? { token: c.token } : {}),
      ...(c.tokenFile !== undefined ? { tokenFile: c.tokenFile } : {}),
    })
    this.#pool = new Pool(url.origin, {
      connections: options.connections ?? 8,
      connect: {
        timeout: options.timeoutMs,
        ...(c.ca !== undefined ? { ca: c.ca } : {}),
        ...(c.cert !== undefined ? { cert: c.cert } : {}),
        ...(c.key !== undefined ? { key: c.key } : {}),
        ...(c.tlsServerName !== undefined ? { servername: c.tlsServerName } : {}),
        rejectUnauthorized: !c.insecureSkipTlsVerify,
      },
    })
  }

  /** Where the credentials came from (for logs). */
  get source(): string {
    return this.#creds.source
  }

  /**
   * POSTs `body` to `path` and returns the object the server created (201 or 200), or
   * rejects with `PFG_ERR_AUTH_UNAVAILABLE`.
   */
  async create(path: string, body: object): Promise<Record<string, unknown>> {
    const what = `POST ${path}`
    const token = await this.#tokens.get().catch((err: unknown) => {
      throw appError('PFG_ERR_AUTH_UNAVAILABLE', `${what}: ${describeError(err)}`, { cause: err })
    })
    const payload = JSON.stringify(body)
    const signal = AbortSignal.timeout(this.#timeoutMs)
    let status: number
    let text = ''
    try {
      const res = await this.#pool.request({
        method: 'POST',
        path: this.#basePath + path,
        headers: {
          accept: 'application/json',
          'content-type': 'application/json',
          'user-agent': 'pfgate-gateway',
          ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
        },
        body: payload,
        signal,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      })
      status = res.statusCode
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        text += chunk.toString('utf8')
        if (text.length > MAX_ANSWER_BYTES) {
          res.body.destroy()
          throw new Error(`answer over ${MAX_ANSWER_BYTES} bytes`)
        }
      }
    } catch (err) {
      const why = signal.aborted ? `no answer within ${this.#timeoutMs} ms` : describeError(err)
      throw appError('PFG_ERR_AUTH_UNAVAILABLE', `${what}: ${why}`, { cause: err })
    }
    let doc: unknown
    try {
      doc = JSON.parse(text)
    } catch {
      doc = undefined
    }
    const obj =
      typeof doc === 'object' && doc !== null && !Array.isArray(doc)
        ? (doc as Record<string, unknown>)
        : undefined
    if (status !== 200 && status !== 201) {
      if (status === 401) this.#tokens.invalidate()
      const message = typeof obj?.message === 'string' ? obj.message.slice(0, 300) : ''
      const hint =
        status === 403
          ? ` (the gateway's identity from ${this.#creds.source} needs create on this resource: see deploy/kubernetes/rbac.yaml)`
          : status === 401
            ? ` (the API server rejected the gateway's credentials from ${this.#creds.source})`
            : ''
      throw appError('PFG_ERR_AUTH_UNAVAILABLE', `${what}: ${status} ${message}${hint}`)
    }
    if (obj === undefined)
      throw appError('PFG_ERR_AUTH_UNAVAILABLE', `${what}: the answer is not a JSON object`)
    return obj
  }

  close(): Promise<void> {
    return this.#pool.close()
  }
}
