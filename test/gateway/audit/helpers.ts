/**
 * Test helpers for the audit subsystem: temp directories, a small tmpfs (to fill a file
 * system for real), a real HTTP collector that can be stopped and restarted on the same
 * port, and polling.
 *
 * @module
 */
import type { TestContext } from 'node:test'
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { Logger } from 'pino'
import type { AuditRecord, AuditType } from '../../../src/protocol/audit-record.js'
import { createAuditRecord } from '../../../src/gateway/audit/record.js'
import type { AuditFields } from '../../../src/gateway/audit/record.js'
import { readTrail } from '../../../src/gateway/audit/trail-reader.js'

const stacks = new WeakMap<TestContext, (() => unknown)[]>()

/**
 * Registers a clean-up step; a test's steps run in reverse order (node:test runs `after`
 * hooks in registration order, but a sink must close before its directory is removed).
 */
export function defer(t: TestContext, fn: () => unknown): void {
  let stack = stacks.get(t)
  if (stack === undefined) {
    const steps: (() => unknown)[] = []
    stack = steps
    stacks.set(t, steps)
    t.after(async () => {
      for (const step of steps.reverse()) await step()
    })
  }
  stack.push(fn)
}

/** A fresh temp directory, removed after the test. */
export async function tempDir(t: TestContext, prefix = 'pfgate-audit-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  defer(t, () => rm(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Mounts a tmpfs of `sizeKiB` on a fresh directory (needs root, as CI runs), unmounted
 * after the test. Throws (the test fails loudly) when mounting is not possible.
 */
export async function mountTmpfs(t: TestContext, sizeKiB: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pfgate-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k,mode=0755`, 'tmpfs', dir])
  defer(t, async () => {
    execFileSync('umount', ['-l', dir])
    await rm(dir, { recursive: true, force: true })
  })
  return dir
}

/** A record of `type` with test defaults. */
export function rec(type: AuditType, fields: AuditFields = {}): AuditRecord {
  return createAuditRecord(type, { user: 'alice', namespace: 'default', pod: 'web-0', ...fields })
}

/** Every record of the trail at `path` (rotated files included), plus the read summary. */
export async function readAll(path: string): Promise<{
  records: AuditRecord[]
  malformed: number
  partialTails: number
}> {
  const records: AuditRecord[] = []
  const s = await readTrail(path, (r) => records.push(r))
  return { records, malformed: s.malformed, partialTails: s.partialTails }
}

/** Polls `cond` every 10 ms until it is true or `timeoutMs` passes (then throws `what`). */
export async function waitFor(
  cond: () => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** A logger whose output is kept in `text` (to check that secrets are never logged). */
export function captureLogger(): { logger: Logger; text: () => string } {
  let text = ''
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString()
      cb()
    },
  })
  return { logger: pino({ level: 'debug' }, sink), text: () => text }
}

/** What the collector does with a POST. */
export type CollectorBehaviour = 'ok' | 'fail500'

/** One POST the collector received. */
export interface CollectorRequest {
  headers: IncomingMessage['headers']
  records: AuditRecord[]
}

/** A real HTTP audit collector on loopback that can be stopped and restarted on its port. */
export class Collector {
  readonly requests: CollectorRequest[] = []
  behaviour: CollectorBehaviour = 'ok'
  /** When set, requests after this many acknowledged ones are answered 500. */
  acceptLimit: number | undefined
  port = 0
  #server: Server | undefined

  /** Every record of every acknowledged POST, in arrival order. */
  get records(): AuditRecord[] {
    return this.requests.flatMap((r) => r.records)
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/audit`
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => this.#handle(req, res))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => resolve())
    })
    this.port = (server.address() as AddressInfo).port
    this.#server = server
  }

  /** Stops listening and cuts every connection (the collector is down). */
  async stop(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server === undefined) return
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeAllConnections()
    await closed
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const over = this.acceptLimit !== undefined && this.requests.length >= this.acceptLimit
      if (this.behaviour === 'fail500' || over) {
        res.writeHead(500).end('down for maintenance')
        return
      }
      let records: AuditRecord[]
      try {
        records = JSON.parse(Buffer.concat(chunks).toString('utf8')) as AuditRecord[]
      } catch {
        res.writeHead(400).end('bad json')
        return
      }
      this.requests.push({ headers: req.headers, records })
      res.writeHead(204).end()
    })
  }
}
