/**
 * A local Kubernetes API server for tests, speaking the real wire format of the
 * parts the gateway's registry uses: HTTPS with its own CA, bearer-token and
 * client-certificate authentication, `Status` error bodies, paginated lists of
 * pods and nodes (`limit`, `continue`, `metadata.resourceVersion`), and chunked
 * newline-delimited JSON watches (`watch=1&resourceVersion=…&allowWatchBookmarks=
 * true&timeoutSeconds=…`) with BOOKMARK events, label selectors (including the
 * ADDED/DELETED a watcher sees when an object starts or stops matching), 410 Gone
 * after compaction (as an HTTP status or as an ERROR event), server-side watch
 * timeouts and abrupt connection drops.
 *
 * It also answers `TokenReview` (`authentication.k8s.io/v1`) and `SubjectAccessReview`
 * (`authorization.k8s.io/v1`) creations as kube-apiserver does: `POST` of the object, `201
 * Created` with the object echoed back plus its `status` (`metadata.creationTimestamp:
 * null`), 400 for a body that is not one, 403 when the caller may not create them; and it
 * can fail them (500 `InternalError`) or never answer them (a hung API server).
 *
 * Watch bytes are cut at arbitrary offsets and written with event-loop turns in
 * between, so events (and multi-byte UTF-8 characters) span chunks and several
 * events share one, as on a real connection.
 *
 * @module
 */
import 'reflect-metadata'
import { randomBytes, randomUUID, webcrypto } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:https'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { setImmediate as turn } from 'node:timers/promises'
import * as x509 from '@peculiar/x509'
import { stringify as stringifyYaml } from 'yaml'

x509.cryptoProvider.set(webcrypto as never)

// ───────────────────────────── PKI ─────────────────────────────

/** PEM material of one test cluster. */
export interface FakeKubePki {
  caCert: string
  caKey: string
  serverCert: string
  serverKey: string
  /** A client certificate (CN `pfgate-gateway`) the server accepts. */
  clientCert: string
  clientKey: string
  /** A client certificate from another CA (the server rejects it). */
  strangerCert: string
  strangerKey: string
}

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const

function pem(der: ArrayBuffer, label: string): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? []
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`
}

async function keyPair(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])
}

async function selfSignedCa(
  cn: string,
): Promise<{ cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair }> {
  const keys = await keyPair()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01' + randomBytes(8).toString('hex'),
    name: `CN=${cn}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys: keys as never,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  })
  return { cert, keys }
}

async function leaf(
  ca: { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair },
  cn: string,
  usage: 'server' | 'client',
): Promise<{ cert: string; key: string }> {
  const keys = await keyPair()
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(
      [usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
      false,
    ),
  ]
  if (usage === 'server') {
    extensions.push(
      new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' },
        { type: 'dns', value: 'localhost' },
        { type: 'dns', value: 'kubernetes.default.svc' },
      ]),
    )
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01' + randomBytes(8).toString('hex'),
    subject: `CN=${cn}, O=pfgate-test`,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: keys.publicKey as never,
    signingKey: ca.keys.privateKey as never,
    signingAlgorithm: EC,
    extensions,
  })
  return {
    cert: cert.toString('pem') + '\n',
    key: pem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
  }
}

/** Generates a CA, a server certificate for 127.0.0.1/localhost and client certificates. */
export async function generateFakeKubePki(): Promise<FakeKubePki> {
  const ca = await selfSignedCa('fake-kube-ca')
  const other = await selfSignedCa('stranger-ca')
  const server = await leaf(ca, 'kube-apiserver', 'server')
  const client = await leaf(ca, 'pfgate-gateway', 'client')
  const stranger = await leaf(other, 'pfgate-gateway', 'client')
  return {
    caCert: ca.cert.toString('pem') + '\n',
    caKey: pem(await webcrypto.subtle.exportKey('pkcs8', ca.keys.privateKey), 'PRIVATE KEY'),
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    strangerCert: stranger.cert,
    strangerKey: stranger.key,
  }
}

// ───────────────────────────── objects ─────────────────────────────

/** A pod to create or replace. */
export interface FakePod {
  namespace: string
  name: string
  nodeName?: string
  phase?: string
  uid?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
  /** Ports per container: one inner list per container. */
  containers?: {
    name?: string
    ports?: { name?: string; containerPort: number; protocol?: string }[]
  }[]
}

/** A node to create or replace. */
export interface FakeNode {
  name: string
  addresses?: { type: string; address: string }[]
  annotations?: Record<string, string>
  labels?: Record<string, string>
}

type Kind = 'pods' | 'nodes'

/** A user as TokenReview reports it. */
export interface FakeReviewedUser {
  username: string
  uid?: string
  groups?: string[]
  extra?: Record<string, string[]>
  /** The audiences the token is for (default: the API server's, `https://kubernetes.default.svc`). */
  audiences?: string[]
}

/** One RBAC grant the fake's SubjectAccessReview honours. */
export interface FakeAccessRule {
  users?: string[]
  groups?: string[]
  verb: string
  resource: string
  subresource?: string
  /** Any namespace when absent. */
  namespace?: string
  /** Any name when absent. */
  names?: string[]
}

/** How reviews currently fail: not at all, with a 500, or by never answering. */
export type FakeReviewFailure = 'none' | 'error' | 'hang'
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- API JSON the fake builds and reads back
type Obj = Record<string, any>

interface HistoryEntry {
  rv: number
  kind: Kind
  type: 'ADDED' | 'MODIFIED' | 'DELETED'
  object: Obj
  /** The object before a MODIFIED (for selector transitions). */
  previous?: Obj
}

/** One request as the server saw it. */
export interface FakeRequestRecord {
  method: string
  path: string
  query: Record<string, string>
  auth: 'token' | 'cert' | 'none' | 'rejected'
  status: number
  at: number
}

interface Watcher {
  kind: Kind
  namespace?: string
  selector: Selector
  /** The client asked for BOOKMARK events (allowWatchBookmarks). */
  bookmarks: boolean
  res: ServerResponse
  socket: Socket
  pending: Buffer[]
  flushing: boolean
  ended: boolean
  timer?: NodeJS.Timeout
}

type Selector = (labels: Record<string, string> | undefined) => boolean

function parseSelector(text: string | null): Selector {
  if (text === null || text === '') return () => true
  const reqs = text.split(',').map((part) => {
    const t = part.trim()
    let m = /^([^!=]+)!=(.*)$/.exec(t)
    if (m !== null) {
      const [k, v] = [m[1]!.trim(), m[2]!.trim()]
      return (l: Record<string, string>) => l[k] !== v
    }
    m = /^([^!=]+)==?(.*)$/.exec(t)
    if (m !== null) {
      const [k, v] = [m[1]!.trim(), m[2]!.trim()]
      return (l: Record<string, string>) => l[k] === v
    }
    if (t.startsWith('!')) return (l: Record<string, string>) => !(t.slice(1) in l)
    return (l: Record<string, string>) => t in l
  })
  return (labels) => reqs.every((r) => r(labels ?? {}))
}

/** A boolean query parameter as the API server parses it (Go's strconv.ParseBool). */
function isTrue(value: string | undefined): boolean {
  return value !== undefined && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(value)
}

function status(code: number, reason: string, message: string): Obj {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  }
}

/** Options of {@link FakeKubeApiServer.start}. */
export interface FakeKubeApiServerOptions {
  /** Bearer tokens accepted (default `['test-token']`). */
  tokens?: string[]
  /** Client-certificate CNs accepted (issued by the server's CA; default `['pfgate-gateway']`). */
  certUsers?: string[]
  /** PKI to reuse (generating one takes a few ms). */
  pki?: FakeKubePki
}

/** The fake API server. Create with {@link FakeKubeApiServer.start}; `close()` in `after`. */
export class FakeKubeApiServer {
  readonly pki: FakeKubePki
  /** `https://127.0.0.1:<port>`. */
  url = ''
  /** Every request, in arrival order. */
  readonly requests: FakeRequestRecord[] = []
  /** How a watch from a compacted resourceVersion is refused. */
  goneMode: 'status' | 'event' = 'event'
  /** Server-side cap on a watch's duration, ms (as kube-apiserver's --min-request-timeout). */
  maxWatchMs = 60_000
  /** Resources answered 403. */
  readonly forbidden = new Set<Kind | 'tokenreviews' | 'subjectaccessreviews'>()
  /** Tokens TokenReview accepts, and whom they name. */
  readonly reviewedTokens = new Map<string, FakeReviewedUser>()
  /** The grants SubjectAccessReview evaluates (default deny). */
  accessRules: FakeAccessRule[] = []
  /** Every TokenReview and SubjectAccessReview body received. */
  readonly reviews: { kind: string; spec: Obj }[] = []
  /** Make reviews fail. */
  reviewFailure: FakeReviewFailure = 'none'

  #tokens: Set<string>
  readonly #certUsers: Set<string>
  #server!: Server
  readonly #sockets = new Set<Socket>()
  readonly #watchers = new Set<Watcher>()
  readonly #pods = new Map<string, Obj>()
  readonly #nodes = new Map<string, Obj>()
  readonly #history: HistoryEntry[] = []
  readonly #snapshots = new Map<string, { rv: number; items: Obj[] }>()
  #rv = 100
  #compactedRv = 0
  #hold: Promise<void> | undefined
  #closing = false
  #cut = 7

  private constructor(options: FakeKubeApiServerOptions, pki: FakeKubePki) {
    this.pki = pki
    this.#tokens = new Set(options.tokens ?? ['test-token'])
    this.#certUsers = new Set(options.certUsers ?? ['pfgate-gateway'])
  }

  /** Starts a server on 127.0.0.1 (random port). */
  static async start(options: FakeKubeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const s = new FakeKubeApiServer(options, options.pki ?? (await generateFakeKubePki()))
    s.#server = createServer(
      {
        key: s.pki.serverKey,
        cert: s.pki.serverCert,
        ca: s.pki.caCert,
        requestCert: true,
        rejectUnauthorized: false, // token clients present no certificate
      },
      (req, res) => s.#handle(req, res),
    )
    // Track raw TCP connections: a handshake in progress also keeps close() waiting.
    s.#server.on('connection', (sock: Socket) => {
      if (s.#closing) {
        sock.destroy() // a client still reconnecting while we shut down
        return
      }
      s.#sockets.add(sock)
      sock.on('close', () => s.#sockets.delete(sock))
    })
    s.#server.on('tlsClientError', () => undefined)
    await new Promise<void>((resolve) => s.#server.listen(0, '127.0.0.1', resolve))
    const addr = s.#server.address()
    if (addr === null || typeof addr === 'string') throw new Error('no address')
    s.url = `https://127.0.0.1:${addr.port}`
    return s
  }

  /** The current resourceVersion. */
  get resourceVersion(): string {
    return String(this.#rv)
  }

  /** Open watch connections. */
  get watchCount(): number {
    return this.#watchers.size
  }

  /** Open TCP connections. */
  get connectionCount(): number {
    return this.#sockets.size
  }

  /** Replaces the accepted bearer tokens. */
  setTokens(tokens: string[]): void {
    this.#tokens = new Set(tokens)
  }

  /** Requests matching a path (exact) and, optionally, watch or list. */
  requestsTo(path: string, kind?: 'watch' | 'list'): FakeRequestRecord[] {
    return this.requests.filter(
      (r) =>
        r.path === path && (kind === undefined || (kind === 'watch') === isTrue(r.query.watch)),
    )
  }

  // ───── mutations ─────

  /** Creates or replaces a pod; watchers see it unless `notify` is false. Returns the object. */
  upsertPod(p: FakePod, options: { notify?: boolean } = {}): Obj {
    const key = `${p.namespace}/${p.name}`
    const previous = this.#pods.get(key)
    const rv = ++this.#rv
    const object: Obj = {
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: {
        name: p.name,
        namespace: p.namespace,
        uid: p.uid ?? (previous?.metadata.uid as string | undefined) ?? randomUUID(),
        resourceVersion: String(rv),
        creationTimestamp:
          (previous?.metadata.creationTimestamp as string | undefined) ??
          new Date(Math.floor(Date.now() / 1000) * 1000).toISOString().replace('.000Z', 'Z'),
        labels: p.labels ?? {},
        // Non-ASCII on purpose: chunk cuts must not break multi-byte characters.
        annotations: { 'example.com/description': 'café ☕ — ünïcødé', ...p.annotations },
        managedFields: [
          {
            manager: 'kubelet',
            operation: 'Update',
            apiVersion: 'v1',
            time: '2024-01-01T00:00:00Z',
          },
        ],
      },
      spec: {
        nodeName: p.nodeName ?? '',
        restartPolicy: 'Always',
        containers: (p.containers ?? [{ name: 'main', ports: [{ containerPort: 8080 }] }]).map(
          (c, i) => ({
            name: c.name ?? `c${i}`,
            image: 'registry.example/app:1',
            ports: (c.ports ?? []).map((port) => ({ protocol: 'TCP', ...port })),
            resources: {},
          }),
        ),
      },
      status: {
        phase: p.phase ?? 'Running',
        conditions: [{ type: 'Ready', status: 'True' }],
        podIP: '10.0.0.1',
      },
    }
    if (object.spec.nodeName === '') delete object.spec.nodeName
    this.#pods.set(key, object)
    this.#record(
      {
        rv,
        kind: 'pods',
        type: previous ? 'MODIFIED' : 'ADDED',
        object,
        ...(previous ? { previous } : {}),
      },
      options.notify,
    )
    return object
  }

  /** Deletes a pod (no-op if absent). */
  deletePod(namespace: string, name: string, options: { notify?: boolean } = {}): void {
    const key = `${namespace}/${name}`
    const old = this.#pods.get(key)
    if (old === undefined) return
    this.#pods.delete(key)
    const rv = ++this.#rv
    const object = structuredClone(old)
    object.metadata.resourceVersion = String(rv)
    this.#record({ rv, kind: 'pods', type: 'DELETED', object }, options.notify)
  }

  /** Creates or replaces a node. */
  upsertNode(n: FakeNode, options: { notify?: boolean } = {}): Obj {
    const previous = this.#nodes.get(n.name)
    const rv = ++this.#rv
    const object: Obj = {
      kind: 'Node',
      apiVersion: 'v1',
      metadata: {
        name: n.name,
        uid: (previous?.metadata.uid as string | undefined) ?? randomUUID(),
        resourceVersion: String(rv),
        labels: { 'kubernetes.io/hostname': n.name, ...n.labels },
        annotations: { 'node.alpha.kubernetes.io/ttl': '0', ...n.annotations },
      },
      spec: { podCIDR: '10.244.0.0/24' },
      status: {
        addresses: n.addresses ?? [
          { type: 'InternalIP', address: '10.0.0.10' },
          { type: 'Hostname', address: n.name },
        ],
        conditions: [{ type: 'Ready', status: 'True' }],
        nodeInfo: { kubeletVersion: 'v1.30.0' },
      },
    }
    this.#nodes.set(n.name, object)
    this.#record(
      {
        rv,
        kind: 'nodes',
        type: previous ? 'MODIFIED' : 'ADDED',
        object,
        ...(previous ? { previous } : {}),
      },
      options.notify,
    )
    return object
  }

  /** Deletes a node. */
  deleteNode(name: string, options: { notify?: boolean } = {}): void {
    const old = this.#nodes.get(name)
    if (old === undefined) return
    this.#nodes.delete(name)
    const rv = ++this.#rv
    const object = structuredClone(old)
    object.metadata.resourceVersion = String(rv)
    this.#record({ rv, kind: 'nodes', type: 'DELETED', object }, options.notify)
  }

  #record(entry: HistoryEntry, notify = true): void {
    this.#history.push(entry)
    if (!notify) return
    for (const w of this.#watchers) this.#deliver(w, entry)
  }

  // ───── watch control ─────

  /** Forgets history up to now: watches (and continue tokens) from older versions get 410. */
  compact(): void {
    this.#compactedRv = this.#rv
    this.#history.length = 0
  }

  /** Sends an ERROR 410 `Expired` event on every open watch, then ends it (a watcher fell behind). */
  expireWatches(): void {
    const line = JSON.stringify({
      type: 'ERROR',
      object: status(
        410,
        'Expired',
        `too old resource version: ${this.#compactedRv} (${this.#rv})`,
      ),
    })
    for (const w of this.#watchers) {
      this.#enqueue(w, line)
      this.#finish(w)
    }
  }

  /** Sends a BOOKMARK at the current resourceVersion on every open watch that allows them. */
  sendBookmark(): void {
    for (const w of this.#watchers) {
      if (!w.bookmarks) continue
      this.#enqueue(
        w,
        JSON.stringify({
          type: 'BOOKMARK',
          object: {
            kind: w.kind === 'pods' ? 'Pod' : 'Node',
            apiVersion: 'v1',
            metadata: {
              resourceVersion: String(this.#rv),
              annotations: { 'k8s.io/initial-events-end': 'false' },
            },
          },
        }),
      )
    }
  }

  /** Ends every open watch cleanly, as the server-side timeout does. */
  endWatches(): void {
    for (const w of this.#watchers) this.#finish(w)
  }

  /**
   * Kills every connection abruptly (RST-like destroy). With `partial`, each open
   * watch first gets half an event, so the client sees a truncated line.
   */
  async dropConnections(options: { partial?: boolean } = {}): Promise<void> {
    if (options.partial === true) {
      for (const w of this.#watchers) {
        if (!w.ended)
          w.res.write('{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"na')
      }
      await turn()
      await turn()
    }
    for (const w of this.#watchers) {
      clearTimeout(w.timer)
      w.ended = true
    }
    this.#watchers.clear()
    for (const s of this.#sockets) s.destroy()
  }

  /** Delays every list response until the returned function is called. */
  holdLists(): () => void {
    let release!: () => void
    this.#hold = new Promise<void>((r) => (release = r))
    return () => {
      this.#hold = undefined
      release()
    }
  }

  /** Ends watches, destroys connections and stops listening. */
  async close(): Promise<void> {
    this.#closing = true
    for (const w of this.#watchers) clearTimeout(w.timer)
    this.#watchers.clear()
    for (const s of this.#sockets) s.destroy()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  // ───── request handling ─────

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://x')
    const query = Object.fromEntries(url.searchParams)
    const record: FakeRequestRecord = {
      method: req.method ?? '',
      path: url.pathname,
      query,
      auth: 'none',
      status: 0,
      at: Date.now(),
    }
    this.requests.push(record)
    const reply = (code: number, body: Obj): void => {
      record.status = code
      const text = JSON.stringify(body)
      res.writeHead(code, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
      })
      res.end(text)
    }

    const sock = req.socket as TLSSocket
    const authz = req.headers.authorization
    if (authz !== undefined) {
      const m = /^Bearer (.+)$/.exec(authz)
      if (m !== null && this.#tokens.has(m[1]!)) record.auth = 'token'
      else record.auth = 'rejected'
    } else if (sock.authorized) {
      const cn = sock.getPeerCertificate().subject?.CN
      record.auth = typeof cn === 'string' && this.#certUsers.has(cn) ? 'cert' : 'rejected'
    } else if (
      sock.getPeerCertificate() !== null &&
      Object.keys(sock.getPeerCertificate()).length > 0
    ) {
      record.auth = 'rejected' // a certificate we do not trust
    }
    if (record.auth === 'none' || record.auth === 'rejected') {
      reply(401, status(401, 'Unauthorized', 'Unauthorized'))
      return
    }
    if (
      url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews' ||
      url.pathname === '/apis/authorization.k8s.io/v1/subjectaccessreviews'
    ) {
      this.#review(req, url.pathname, record, reply)
      return
    }
    if (req.method !== 'GET') {
      reply(405, status(405, 'MethodNotAllowed', 'the server does not allow this method'))
      return
    }
    let kind: Kind
    let namespace: string | undefined
    let m: RegExpExecArray | null
    if (url.pathname === '/api/v1/pods') kind = 'pods'
    else if (url.pathname === '/api/v1/nodes') kind = 'nodes'
    else if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname)) !== null) {
      kind = 'pods'
      namespace = decodeURIComponent(m[1]!)
    } else {
      reply(404, status(404, 'NotFound', 'the server could not find the requested resource'))
      return
    }
    if (this.forbidden.has(kind)) {
      reply(
        403,
        status(
          403,
          'Forbidden',
          `${kind} is forbidden: User "system:serviceaccount:pfgate:pfgate-gateway" cannot list resource "${kind}" in API group "" at the cluster scope`,
        ),
      )
      return
    }
    const selector = parseSelector(url.searchParams.get('labelSelector'))
    if (isTrue(query.watch)) {
      this.#watch(req, res, record, kind, namespace, selector)
      return
    }
    void this.#list(url, kind, namespace, selector, reply)
  }

  #review(
    req: IncomingMessage,
    path: string,
    record: FakeRequestRecord,
    reply: (code: number, body: Obj) => void,
  ): void {
    const token = path.includes('tokenreviews')
    const resource = token ? 'tokenreviews' : 'subjectaccessreviews'
    const group = token ? 'authentication.k8s.io' : 'authorization.k8s.io'
    const kind = token ? 'TokenReview' : 'SubjectAccessReview'
    if (req.method !== 'POST') {
      reply(405, status(405, 'MethodNotAllowed', 'the server does not allow this method'))
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size <= 3 * 1024 * 1024) chunks.push(c)
    })
    req.on('end', () => {
      if (this.forbidden.has(resource)) {
        reply(
          403,
          status(
            403,
            'Forbidden',
            `${resource}.${group} is forbidden: User "system:serviceaccount:pfgate:pfgate-gateway" cannot create resource "${resource}" in API group "${group}" at the cluster scope`,
          ),
        )
        return
      }
      let body: Obj
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj
      } catch {
        reply(400, status(400, 'BadRequest', 'the body is not JSON'))
        return
      }
      if (
        body.kind !== kind ||
        body.apiVersion !== `${group}/v1` ||
        typeof body.spec !== 'object'
      ) {
        reply(400, status(400, 'BadRequest', `the body is not a ${group}/v1 ${kind}`))
        return
      }
      this.reviews.push({ kind, spec: body.spec as Obj })
      if (this.reviewFailure === 'hang') {
        record.status = -1 // never answered
        return
      }
      if (this.reviewFailure === 'error') {
        reply(
          500,
          status(500, 'InternalError', 'Internal error occurred: etcdserver: request timed out'),
        )
        return
      }
      const spec = body.spec as Obj
      const answer: Obj = {
        kind,
        apiVersion: `${group}/v1`,
        metadata: { creationTimestamp: null },
        spec,
        status: token ? this.#tokenStatus(spec) : this.#accessStatus(spec),
      }
      reply(201, answer)
    })
  }

  #tokenStatus(spec: Obj): Obj {
    const user = typeof spec.token === 'string' ? this.reviewedTokens.get(spec.token) : undefined
    const tokenAudiences = user?.audiences ?? ['https://kubernetes.default.svc']
    const asked = Array.isArray(spec.audiences) ? (spec.audiences as string[]) : undefined
    const audiences =
      asked !== undefined ? asked.filter((a) => tokenAudiences.includes(a)) : tokenAudiences
    if (user === undefined) return { user: {}, error: 'invalid bearer token' }
    if (asked !== undefined && audiences.length === 0) {
      return { user: {}, error: 'token audiences are invalid for the target audiences' }
    }
    return {
      authenticated: true,
      user: {
        username: user.username,
        ...(user.uid !== undefined ? { uid: user.uid } : {}),
        groups: [...(user.groups ?? []), 'system:authenticated'],
        ...(user.extra !== undefined ? { extra: user.extra } : {}),
      },
      audiences,
    }
  }

  #accessStatus(spec: Obj): Obj {
    const ra = (spec.resourceAttributes ?? {}) as Obj
    const groups = Array.isArray(spec.groups) ? (spec.groups as string[]) : []
    const rule = this.accessRules.find(
      (r) =>
        ((r.users ?? []).includes(spec.user as string) ||
          (r.groups ?? []).some((g) => groups.includes(g))) &&
        r.verb === ra.verb &&
        r.resource === ra.resource &&
        (r.subresource ?? '') === (ra.subresource ?? '') &&
        (r.namespace === undefined || r.namespace === ra.namespace) &&
        (r.names === undefined || r.names.includes(ra.name as string)),
    )
    if (rule !== undefined) {
      return {
        allowed: true,
        reason: `RBAC: allowed by RoleBinding "fake" of Role "fake" to User "${String(spec.user)}"`,
      }
    }
    return { allowed: false }
  }

  async #list(
    url: URL,
    kind: Kind,
    namespace: string | undefined,
    selector: Selector,
    reply: (code: number, body: Obj) => void,
  ): Promise<void> {
    if (this.#hold !== undefined) await this.#hold
    const limit = Number(url.searchParams.get('limit') ?? '0')
    const cont = url.searchParams.get('continue') ?? ''
    let snap: { rv: number; items: Obj[] }
    let offset = 0
    let id: string
    if (cont !== '') {
      let token: { id: string; offset: number; rv: number }
      try {
        token = JSON.parse(Buffer.from(cont, 'base64url').toString('utf8')) as typeof token
      } catch {
        reply(400, status(400, 'BadRequest', 'continue key is not valid'))
        return
      }
      const found = this.#snapshots.get(token.id)
      if (found === undefined || token.rv < this.#compactedRv) {
        reply(
          410,
          status(
            410,
            'Expired',
            'The provided continue parameter is too old to display a consistent list result.',
          ),
        )
        return
      }
      snap = found
      offset = token.offset
      id = token.id
    } else {
      const source = kind === 'pods' ? this.#pods : this.#nodes
      const items = [...source.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([, o]) => o)
        .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
        .filter((o) => selector(o.metadata.labels as Record<string, string>))
        .map((o) => {
          // List items carry no kind/apiVersion, as the real API server sends them.
          const rest = { ...o }
          delete rest.kind
          delete rest.apiVersion
          return rest
        })
      snap = { rv: this.#rv, items }
      id = randomUUID()
    }
    const end = limit > 0 ? Math.min(snap.items.length, offset + limit) : snap.items.length
    const metadata: Obj = { resourceVersion: String(snap.rv) }
    if (end < snap.items.length) {
      this.#snapshots.set(id, snap)
      metadata.continue = Buffer.from(JSON.stringify({ id, offset: end, rv: snap.rv })).toString(
        'base64url',
      )
      metadata.remainingItemCount = snap.items.length - end
    } else {
      this.#snapshots.delete(id)
    }
    reply(200, {
      kind: kind === 'pods' ? 'PodList' : 'NodeList',
      apiVersion: 'v1',
      metadata,
      items: snap.items.slice(offset, end),
    })
  }

  #watch(
    req: IncomingMessage,
    res: ServerResponse,
    record: FakeRequestRecord,
    kind: Kind,
    namespace: string | undefined,
    selector: Selector,
  ): void {
    const rvParam = record.query.resourceVersion ?? ''
    const since = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam)
    if (since !== undefined && since < this.#compactedRv && this.goneMode === 'status') {
      record.status = 410
      const text = JSON.stringify(
        status(410, 'Expired', `too old resource version: ${since} (${this.#compactedRv})`),
      )
      res.writeHead(410, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
      })
      res.end(text)
      return
    }
    record.status = 200
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' })
    res.flushHeaders()
    const w: Watcher = {
      kind,
      ...(namespace !== undefined ? { namespace } : {}),
      selector,
      bookmarks: isTrue(record.query.allowWatchBookmarks),
      res,
      socket: req.socket,
      pending: [],
      flushing: false,
      ended: false,
    }
    this.#watchers.add(w)
    const forget = (): void => {
      clearTimeout(w.timer)
      w.ended = true
      this.#watchers.delete(w)
    }
    res.on('close', forget)
    if (since !== undefined && since < this.#compactedRv) {
      // goneMode 'event': the watch cache answers 200 then an ERROR event.
      this.#enqueue(
        w,
        JSON.stringify({
          type: 'ERROR',
          object: status(
            410,
            'Expired',
            `too old resource version: ${since} (${this.#compactedRv})`,
          ),
        }),
      )
      this.#finish(w)
      return
    }
    const timeoutS = Number(record.query.timeoutSeconds ?? '0')
    const ms = Math.min(timeoutS > 0 ? timeoutS * 1000 : Infinity, this.maxWatchMs)
    w.timer = setTimeout(() => this.#finish(w), ms)
    if (since === undefined) {
      const source = kind === 'pods' ? this.#pods : this.#nodes
      for (const object of source.values()) {
        this.#deliver(w, { rv: this.#rv, kind, type: 'ADDED', object })
      }
    } else {
      for (const entry of this.#history) if (entry.rv > since) this.#deliver(w, entry)
    }
  }

  /** Sends an event to a watcher if it matches (with selector transitions, as the watch cache does). */
  #deliver(w: Watcher, e: HistoryEntry): void {
    if (w.ended || e.kind !== w.kind) return
    if (w.namespace !== undefined && e.object.metadata.namespace !== w.namespace) return
    const now = w.selector(e.object.metadata.labels as Record<string, string>)
    let type: string = e.type
    if (e.type === 'MODIFIED' && e.previous !== undefined) {
      const before = w.selector(e.previous.metadata.labels as Record<string, string>)
      if (!before && !now) return
      if (before && !now) type = 'DELETED'
      else if (!before && now) type = 'ADDED'
    } else if (!now) {
      return
    }
    this.#enqueue(w, JSON.stringify({ type, object: e.object }))
  }

  #enqueue(w: Watcher, line: string): void {
    if (w.ended) return
    w.pending.push(Buffer.from(line + '\n', 'utf8'))
    void this.#flush(w)
  }

  /** Writes pending bytes cut at arbitrary offsets, one event-loop turn between pieces. */
  async #flush(w: Watcher): Promise<void> {
    if (w.flushing) return
    w.flushing = true
    try {
      while (w.pending.length > 0 && !w.res.destroyed) {
        const all = Buffer.concat(w.pending)
        w.pending = []
        let at = 0
        while (at < all.length) {
          this.#cut = (this.#cut * 7919 + 13) % 997
          const size = Math.max(1, Math.min(all.length - at, 1 + (this.#cut % 97)))
          if (w.res.destroyed) return
          w.res.write(all.subarray(at, at + size))
          at += size
          await turn()
        }
      }
      if (w.ended && !w.res.destroyed && !w.res.writableEnded) w.res.end()
    } finally {
      w.flushing = false
    }
  }

  /** Ends a watch cleanly once its pending bytes are written. */
  #finish(w: Watcher): void {
    clearTimeout(w.timer)
    w.ended = true
    this.#watchers.delete(w)
    // A flush in progress ends the response when done; otherwise flush (maybe nothing) and end.
    if (!w.flushing) void this.#flush(w)
  }
}

/** Writes a kubeconfig at `path` for `api` with a bearer `token` (what the gateway's registry reads). */
export function writeFakeKubeconfig(api: FakeKubeApiServer, path: string, token: string): void {
  writeFileSync(
    path,
    stringifyYaml({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'fake',
      clusters: [
        {
          name: 'fake',
          cluster: {
            server: api.url,
            'certificate-authority-data': Buffer.from(api.pki.caCert).toString('base64'),
          },
        },
      ],
      users: [{ name: 'gw', user: { token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'gw' } }],
    }),
  )
}

/**
 * Adds the dev cluster's nodes with each agent's port as the node annotation the
 * registry reads, and `localhost` as the preferred address (resolvable here, and on
 * the agents' certificates).
 */
export function upsertDevNodes(api: FakeKubeApiServer, agentPorts: Record<string, number>): void {
  for (const [node, port] of Object.entries(agentPorts)) {
    api.upsertNode({
      name: node,
      addresses: [
        { type: 'InternalIP', address: '127.0.0.1' },
        { type: 'Hostname', address: 'localhost' },
      ],
      annotations: { 'pfgate.io/agent-port': String(port) },
    })
  }
}
