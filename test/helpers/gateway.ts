/**
 * Test helpers for whole-system tests of the gateway's security features: dev tokens for
 * other users, the audit trail of a test cluster, Prometheus scrapes, the static registry
 * (edited while the gateway runs), and raw native port-forward streams with byte counts.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2'
import { join } from 'node:path'
import { parse as parseYaml, stringify as toYaml } from 'yaml'
import type { DevCluster } from '../../src/dev/cluster.js'
import { mintToken } from '../../src/dev/token.js'
import { readTrail } from '../../src/gateway/audit/trail-reader.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'
import { nativePortForwardPath } from '../../src/protocol/constants.js'

export { mintToken }

/** A dev token for `subject` in `groups` (signed with the cluster's dev key). */
export function tokenFor(
  cluster: DevCluster,
  subject: string,
  groups: string[],
  ttlMs = 3_600_000,
): Promise<string> {
  return mintToken(cluster.dir, { subject, groups, ttlMs })
}

/** The cluster's default audit trail file. */
export function trailPath(cluster: DevCluster): string {
  return join(cluster.dir, 'audit', 'audit.log')
}

/** Every record of a trail (rotated files included), oldest first. */
export async function trailRecords(path: string): Promise<AuditRecord[]> {
  const out: AuditRecord[] = []
  await readTrail(path, (r) => out.push(r))
  return out
}

/** Polls the trail until `pick` returns something; rejects after `timeoutMs`. */
export async function waitForRecords<T>(
  path: string,
  pick: (records: AuditRecord[]) => T | undefined,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const got = pick(await trailRecords(path))
    if (got !== undefined) return got
    if (Date.now() > deadline) throw new Error(`timed out waiting for audit records: ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * The trail once it has stopped growing for `quietMs` (records other than
 * `stream.opened` may linger before they are written: `audit.linger`, 10 ms by default).
 */
export async function settledTrail(path: string, quietMs = 200): Promise<AuditRecord[]> {
  let records = await trailRecords(path)
  let since = Date.now()
  while (Date.now() - since < quietMs) {
    await new Promise((r) => setTimeout(r, 20))
    const now = await trailRecords(path)
    if (now.length !== records.length) since = Date.now()
    records = now
  }
  return records
}

/** GETs the gateway's Prometheus text. */
export function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`metrics ${res.statusCode}`)),
      )
    })
    req.on('error', reject)
    req.end()
  })
}

/** The value of one sample (`name{labels}`) in Prometheus text; 0 when absent. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number {
  let sum = 0
  let found = false
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    )
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      sum += Number(m[3])
      found = true
    }
  }
  return found ? sum : 0
}

/** Adds nodes and pods to the cluster's static registry file (the gateway reloads it). */
export function extendRegistry(
  cluster: DevCluster,
  add: { nodes?: Record<string, unknown>[]; pods?: Record<string, unknown>[] },
): void {
  const file = join(cluster.dir, 'registry.yaml')
  const doc = parseYaml(readFileSync(file, 'utf8')) as {
    nodes: Record<string, unknown>[]
    pods: Record<string, unknown>[]
  }
  doc.nodes.push(...(add.nodes ?? []))
  doc.pods.push(...(add.pods ?? []))
  writeFileSync(file, toYaml(doc))
}

/** A native port-forward stream opened on a raw HTTP/2 session. */
export interface RawStream {
  req: ClientHttp2Stream
  /** The response status (200 once open). */
  status: number
  /** The gateway's stream id (pfgate-stream-id header). */
  streamId: string | undefined
  /** Everything received so far. */
  received: () => Buffer
  /** Resolves when the stream closed: how it ended. */
  closed: Promise<{ rstCode: number; ended: boolean; error?: string }>
}

/** Opens `POST /proxy/nodes/{node}/portForward/{ns}/{pod}` and waits for the response headers. */
export function openRaw(
  session: ClientHttp2Session,
  target: { node: string; namespace?: string; pod: string; port: number },
  token: string | undefined,
  extraHeaders: Record<string, string> = {},
): Promise<RawStream> {
  return new Promise((resolve, reject) => {
    const req = session.request(
      {
        ':method': 'POST',
        ':path': nativePortForwardPath(target.node, target.namespace ?? 'default', target.pod),
        port: String(target.port),
        ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
        ...extraHeaders,
      },
      { endStream: false },
    )
    const chunks: Buffer[] = []
    let ended = false
    let error: string | undefined
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => (ended = true))
    const closed = new Promise<{ rstCode: number; ended: boolean; error?: string }>((r) => {
      req.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message))
      req.on('close', () =>
        r({ rstCode: req.rstCode ?? 0, ended, ...(error !== undefined ? { error } : {}) }),
      )
    })
    req.once('response', (h) => {
      const id = h['pfgate-stream-id']
      resolve({
        req,
        status: Number(h[':status']),
        streamId: typeof id === 'string' ? id : undefined,
        received: () => Buffer.concat(chunks),
        closed,
      })
    })
    req.once('close', () =>
      reject(new Error(`stream closed before a response (rst ${req.rstCode})`)),
    )
  })
}

/** Waits until `stream` has received `n` bytes. */
export async function receivedAtLeast(
  stream: RawStream,
  n: number,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (stream.received().length < n) {
    if (Date.now() > deadline)
      throw new Error(`received ${stream.received().length} of ${n} bytes before the timeout`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
