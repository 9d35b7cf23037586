/**
 * The other gateway replicas, for one admin view: the admin API on any replica lists and
 * ends streams and sessions on all of them by asking each peer's admin API with the
 * admin's own bearer token (peers verify it themselves: no new trust between replicas)
 * and `scope=local`, so a peer answers for itself only. Peers come from configuration
 * (`peers.urls`) or from the DNS name of a headless Service (`peers.dns`: one address per
 * ready gateway pod, which Kubernetes derives from the Service's Endpoints). A replica
 * recognises itself among its peers by the gateway id in the answers (docs/scaling.md).
 *
 * @module
 */
import { resolve4, resolve6 } from 'node:dns/promises'
import { isIPv6 } from 'node:net'
import { Agent } from 'undici'
import { describeError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'

/** Query parameter that keeps a peer from asking its own peers. */
export const LOCAL_SCOPE = 'scope=local'

/** Where peers are and how to reach them. */
export interface PeersOptions {
  /** Static peer base URLs (`https://10.0.0.7:8443`). */
  urls: string[]
  /** A headless Service's DNS name and the port: every address it resolves to is a peer. */
  dns?: { name: string; port: number }
  /** CA that issued the gateways' serving certificates (default: the system's). */
  ca?: string | Buffer | undefined
  /** Name to verify on a peer's certificate (a peer dialed by IP has no name of its own). */
  serverName?: string
  timeoutMs: number
  logger: Logger
}

/** One peer's answer. */
export interface PeerAnswer {
  peer: string
  status: number
  /** Parsed JSON body (undefined when it was not JSON or the request failed). */
  body?: unknown
  error?: string
}

const MAX_BODY = 16 * 1024 * 1024

/** See the module comment. */
export class Peers {
  readonly #o: PeersOptions
  readonly #agent: Agent

  constructor(options: PeersOptions) {
    this.#o = options
    this.#agent = new Agent({
      connect: {
        ...(options.ca !== undefined ? { ca: options.ca } : {}),
        ...(options.serverName !== undefined ? { servername: options.serverName } : {}),
        rejectUnauthorized: true,
      },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connections: 4,
    })
  }

  /** The peers' base URLs now (static ones, then the DNS name's addresses). */
  async list(): Promise<string[]> {
    const out = new Set(this.#o.urls.map((u) => u.replace(/\/+$/, '')))
    const dns = this.#o.dns
    if (dns !== undefined) {
      const addrs = [
        ...(await resolve4(dns.name).catch(() => [] as string[])),
        ...(await resolve6(dns.name).catch(() => [] as string[])),
      ]
      for (const a of addrs) out.add(`https://${isIPv6(a) ? `[${a}]` : a}:${dns.port}`)
    }
    return [...out]
  }

  /** `method path` (with `scope=local`) on every peer, in parallel. */
  async all(method: 'GET' | 'DELETE', path: string, authorization: string): Promise<PeerAnswer[]> {
    const peers = await this.list()
    return Promise.all(peers.map((p) => this.#one(p, method, path, authorization)))
  }

  async #one(
    peer: string,
    method: 'GET' | 'DELETE',
    path: string,
    authorization: string,
  ): Promise<PeerAnswer> {
    const sep = path.includes('?') ? '&' : '?'
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), this.#o.timeoutMs)
    try {
      const res = await this.#agent.request({
        origin: peer,
        path: `${path}${sep}${LOCAL_SCOPE}`,
        method,
        headers: { authorization, accept: 'application/json' },
        signal: ac.signal,
      })
      let size = 0
      const chunks: Buffer[] = []
      for await (const c of res.body as AsyncIterable<Buffer>) {
        size += c.length
        if (size > MAX_BODY) throw new Error(`answer larger than ${MAX_BODY} bytes`)
        chunks.push(c)
      }
      let body: unknown
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
      } catch {
        body = undefined
      }
      return { peer, status: res.statusCode, body }
    } catch (err) {
      this.#o.logger.warn({ peer, err: describeError(err) }, 'peer admin request failed')
      return { peer, status: 0, error: describeError(err) }
    } finally {
      clearTimeout(timer)
    }
  }

  async close(): Promise<void> {
    await this.#agent.close()
  }
}
