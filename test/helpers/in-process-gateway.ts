/**
 * Test helpers: a whole gateway in this process (Fastify app, forwarder, real JWT
 * authenticator with a dev signing key, real authorizer, the static registry from a
 * file, an agent pool with real TLS material, metrics), for `inject` and for a real
 * HTTP/2 client on an ephemeral port. The audit port keeps its records in memory.
 * No agent runs: a forward ends at the agent hop (502), which is enough for the routes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:http2'
import type { ClientHttp2Session } from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify as toYaml } from 'yaml'
import { createCa, issueCert } from '../../src/dev/pki.js'
import { DEV_AUDIENCE, DEV_ISSUER, createSigningKey, mintToken } from '../../src/dev/token.js'
import { buildGateway } from '../../src/gateway/app.js'
import type { Gateway, GatewayDeps } from '../../src/gateway/app.js'
import { Authenticator } from '../../src/gateway/auth/authenticator.js'
import { Authorizer } from '../../src/gateway/authz/authorizer.js'
import { parseGatewayConfig } from '../../src/gateway/config.js'
import type { GatewayConfig } from '../../src/gateway/config.js'
import { Forwarder } from '../../src/gateway/forward/forwarder.js'
import type { AuditPort } from '../../src/gateway/forward/forwarder.js'
import { GatewayMetrics } from '../../src/gateway/metrics.js'
import { AgentPool } from '../../src/gateway/relay/agent-pool.js'
import { StaticRegistry } from '../../src/gateway/registry/static-registry.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'
import { silentLogger } from '../../src/shared/log.js'

/** An audit port that keeps every record (`healthy` can be switched off). */
export class MemoryAudit implements AuditPort {
  readonly records: AuditRecord[] = []
  readonly mode = 'blocking-strict' as const
  up = true
  append(record: AuditRecord): Promise<void> {
    this.records.push(record)
    return Promise.resolve()
  }
  appendDenial(record: AuditRecord): boolean {
    this.records.push(record)
    return true
  }
  healthy(): boolean {
    return this.up
  }
}

/**
 * The records `run` appended, comparable: ids and times checked and dropped, refs and
 * client ports replaced by `REF` and `PORT`.
 */
export async function recordsOf(
  audit: MemoryAudit,
  run: () => Promise<unknown>,
): Promise<unknown[]> {
  const n = audit.records.length
  await run()
  return audit.records.slice(n).map((r) => {
    const { id, time, ...rest } = r
    if (!/^[0-9a-f-]{36}$/.test(id) || Number.isNaN(Date.parse(time))) {
      throw new Error(`record with a bad id or time: ${JSON.stringify(r)}`)
    }
    const text = JSON.stringify(rest)
      .replace(/ref [0-9a-f]{8}/g, 'ref REF')
      .replace(/"ref":"[0-9a-f]{8}"/g, '"ref":"REF"')
      .replace(/"sourceAddress":"127\.0\.0\.1:\d+"/g, '"sourceAddress":"127.0.0.1:PORT"')
    return JSON.parse(text) as unknown
  })
}

/** The registry every in-process gateway starts with. */
export const REGISTRY = {
  nodes: [{ name: 'node-a', address: '127.0.0.1', port: 1 }],
  pods: [
    {
      namespace: 'default',
      name: 'echo',
      uid: '11111111-1111-4111-8111-111111111111',
      node: 'node-a',
      labels: { app: 'echo' },
      ports: [{ name: 'tcp', containerPort: 7000 }],
    },
    { namespace: 'default', name: 'web', node: 'node-a', labels: { app: 'web' } },
    { namespace: 'other', name: 'db', node: 'node-a', phase: 'Pending' },
    { namespace: 'default', name: 'secret', node: 'node-a' },
  ],
}

/** A gateway built in this process, and what it is made of. */
export interface InProcessGateway {
  gateway: Gateway
  config: GatewayConfig
  audit: MemoryAudit
  forwarder: Forwarder
  registry: StaticRegistry
  /** The CA that issued the gateway's serving certificate (for a real client). */
  ca: string
  /** A token for `user` in `groups`. */
  token(user: string, groups?: string[]): Promise<string>
  /** Listens on an ephemeral port; returns `https://127.0.0.1:PORT`. */
  listen(): Promise<string>
  /** A real HTTP/2 client of the listening gateway (destroyed by `close`). */
  connect(url: string): Promise<ClientHttp2Session>
  close(): Promise<void>
}

/** Options: start the registry (ready) or not; deps to replace. */
export interface InProcessOptions {
  ready?: boolean
  overrides?: Partial<GatewayDeps>
  config?: Record<string, unknown>
}

/**
 * Builds a gateway in process. Users: `alice` may forward to default/echo and default/web
 * (ports 7000-7999), `root` is an admin; `group:viewers` may forward to namespace other.
 */
export async function inProcessGateway(options: InProcessOptions = {}): Promise<InProcessGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-inproc-'))
  const clients: ClientHttp2Session[] = []
  let registry: StaticRegistry | undefined
  let authenticator: Authenticator | undefined
  let gateway: Gateway | undefined
  const cleanup = async (): Promise<void> => {
    for (const c of clients) c.destroy()
    if (gateway !== undefined) await gateway.close(0)
    await registry?.close()
    authenticator?.close()
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await createSigningKey(dir)
    writeFileSync(join(dir, 'registry.yaml'), toYaml(REGISTRY))
    const ca = await createCa('in-process test CA', 1)
    const serving = await issueCert(ca, {
      commonName: 'gateway',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
      serverAuth: true,
      days: 1,
    })
    const client = await issueCert(ca, { commonName: 'gateway-client', clientAuth: true, days: 1 })
    const config = parseGatewayConfig(
      {
        tls: { cert: 'unused.crt', key: 'unused.key' },
        agents: { ca: 'unused', cert: 'unused', key: 'unused', connectTimeout: '1s' },
        registry: { source: 'static', file: 'registry.yaml' },
        auth: { issuer: DEV_ISSUER, audience: DEV_AUDIENCE, jwks: { file: 'jwks.json' } },
        authorization: {
          rules: [
            {
              users: ['alice'],
              namespaces: ['default'],
              pods: ['echo', 'web'],
              ports: ['7000-7999'],
            },
            { groups: ['viewers'], namespaces: ['other'] },
          ],
          admins: { users: ['root'] },
        },
        ...options.config,
      },
      'in-process',
      dir,
    )
    const logger = silentLogger()
    registry = new StaticRegistry({ file: join(dir, 'registry.yaml'), logger })
    if (options.ready !== false) await registry.start()
    authenticator = new Authenticator(config.auth, logger)
    const authorizer = new Authorizer(config.authorization)
    const metrics = new GatewayMetrics()
    const audit = new MemoryAudit()
    const agents = new AgentPool({
      ca: ca.cert,
      cert: client.cert,
      key: client.key,
      connectTimeoutMs: 1000,
      keepaliveMs: 0,
      logger,
    })
    const forwarder = new Forwarder({
      registry,
      authenticator,
      authorizer,
      agents,
      audit,
      limits: config.limits,
      metrics,
      logger,
      gatewayId: 'gw-test',
    })
    gateway = await buildGateway({
      tls: { cert: serving.cert, key: serving.key },
      logger,
      registry,
      authenticator,
      authorizer,
      agents,
      audit,
      metrics,
      forwarder,
      maxHeaderBytes: config.limits.maxHeaderBytes,
      limits: config.limits,
      nodeProxy: {
        tls: { ca: ca.cert, cert: client.cert, key: client.key },
        connectTimeoutMs: 1000,
      },
      ...options.overrides,
    })
    const gw = gateway
    const reg = registry
    return {
      gateway: gw,
      config,
      audit,
      forwarder,
      registry: reg,
      ca: ca.cert,
      token: (user, groups = []) => mintToken(dir, { subject: user, groups, ttlMs: 3_600_000 }),
      async listen() {
        const { port } = await gw.listen(0, '127.0.0.1', null)
        return `https://127.0.0.1:${port}`
      },
      connect(url) {
        return new Promise((resolve, reject) => {
          const s = connect(url, { ca: ca.cert })
          clients.push(s)
          s.once('connect', () => resolve(s))
          s.once('error', reject)
        })
      },
      close: cleanup,
    }
  } catch (err) {
    await cleanup()
    throw err
  }
}
