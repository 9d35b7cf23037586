/**
 * Test helpers: a raw HTTP/2 client for the gateway (no pfgate CLI in between).
 */
import { connect } from 'node:http2'
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/** Connects to the dev cluster's gateway, trusting its CA. */
export function connectGateway(url: string, dir: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = connect(url, { ca: readFileSync(join(dir, 'ca.crt')) })
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

/** Sends a request with an optional body and collects the answer. */
export function h2Request(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
  body?: Buffer | string,
): Promise<{ status: number; headers: Record<string, unknown>; body: string; rstCode?: number }> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, {
      endStream: body === undefined && headers[':method'] === 'GET',
    })
    let status = 0
    let hdrs: Record<string, unknown> = {}
    const chunks: Buffer[] = []
    req.on('response', (h) => {
      status = Number(h[':status'])
      hdrs = h
    })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () =>
      resolve({ status, headers: hdrs, body: Buffer.concat(chunks).toString('utf8') }),
    )
    req.on('error', (err: Error) => {
      if (status !== 0)
        resolve({
          status,
          headers: hdrs,
          body: Buffer.concat(chunks).toString('utf8'),
          rstCode: req.rstCode,
        })
      else reject(err)
    })
    if (body !== undefined) req.end(body)
    else if (headers[':method'] !== 'GET') req.end()
  })
}

/**
 * Connects to the gateway like {@link connectGateway}, ignores the session's errors (each
 * test checks what it expects) and adds it to `sessions` (destroyed in the file's `after`).
 */
export async function trackedSession(
  cluster: { gatewayUrl: string; dir: string },
  sessions: ClientHttp2Session[],
): Promise<ClientHttp2Session> {
  const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
  s.on('error', () => undefined)
  sessions.push(s)
  return s
}
