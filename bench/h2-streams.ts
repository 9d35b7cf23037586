/**
 * A raw `node:http2` client of the gateway's native stream contract, for the
 * measurements that need one client connection and many streams without local
 * sockets: 10,000 concurrent streams (memory per idle stream), and the stream-open
 * rate with and without a durable audit trail.
 *
 * @module
 */
import { connect } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { PORT_HEADER, nativePortForwardPath } from '../src/protocol/constants.js'
import { h2SessionOptions, widenConnectionWindow } from '../src/protocol/h2-settings.js'
import { BENCH_POD } from './system.js'
import { rssKiB, sleep } from './util.js'

/** Connects to a gateway with the dev CA (in `dir`), settings as the CLI uses them. */
export function connectGateway(url: string, dir: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = connect(url, {
      ...h2SessionOptions(),
      ca: readFileSync(join(dir, 'ca.crt')),
    })
    session.once('connect', () => {
      widenConnectionWindow(session)
      session.off('error', reject)
      session.on('error', () => {
        // Reported through the streams.
      })
      resolve(session)
    })
    session.once('error', reject)
  })
}

/** Opens one stream to the bench pod's echo port; resolves once its byte came back. */
export function openEchoStream(
  session: ClientHttp2Session,
  token: string,
  timeoutMs = 30_000,
): Promise<ClientHttp2Stream> {
  return new Promise((resolve, reject) => {
    const stream = session.request(
      {
        ':method': 'POST',
        ':path': nativePortForwardPath(BENCH_POD.node, BENCH_POD.namespace, BENCH_POD.name),
        [PORT_HEADER]: String(BENCH_POD.echoPort),
        authorization: `Bearer ${token}`,
      },
      { endStream: false },
    )
    const timer = setTimeout(() => {
      stream.destroy()
      reject(new Error(`stream did not echo within ${timeoutMs} ms`))
    }, timeoutMs)
    const fail = (err: Error): void => {
      clearTimeout(timer)
      if (!stream.destroyed) stream.destroy()
      reject(err)
    }
    stream.once('response', (headers) => {
      const status = headers[':status']
      if (status !== 200) {
        fail(new Error(`status ${status}`))
        return
      }
      stream.write('x')
    })
    stream.once('data', () => {
      clearTimeout(timer)
      stream.removeAllListeners('error')
      stream.on('error', () => {
        // Closing errors after the echo are not open failures.
      })
      resolve(stream)
    })
    stream.once('error', fail)
    stream.once('close', () => fail(new Error(`stream closed (RST ${stream.rstCode})`)))
  })
}

/** Ends a stream (half-close, the echo pod ends its side) and waits for it to close. */
export function closeEchoStream(stream: ClientHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.closed || stream.destroyed) return resolve()
    stream.removeAllListeners('close')
    stream.once('close', () => resolve())
    stream.resume()
    stream.end()
  })
}

/** One open-echo-close cycle. */
async function cycle(session: ClientHttp2Session, token: string): Promise<void> {
  await closeEchoStream(await openEchoStream(session, token))
}

/** What {@link manyStreams} measured. */
export interface ManyStreamsResult {
  target: number
  /** Streams that opened and echoed. */
  ok: number
  errors: number
  firstError?: string
  /** Time to open them all, ms. */
  openMs: number
  gatewayRssBeforeKiB: number
  gatewayRssAfterKiB: number
  gatewayKiBPerStream: number
  agentKiBPerStream: number
}

/**
 * Opens `n` streams on one client connection (at most `inFlight` opening at a time),
 * checks each echoes, measures the gateway's RSS growth per open stream, then closes
 * them all. `warmup` short-lived streams (open, echo, close) come first.
 */
export async function manyStreams(
  url: string,
  dir: string,
  token: string,
  pids: { gateway: number | undefined; agent: number | undefined },
  n: number,
  inFlight = 256,
  warmup = 3000,
): Promise<ManyStreamsResult> {
  const session = await connectGateway(url, dir)
  const streams: ClientHttp2Stream[] = []
  try {
    // Warm up (JIT, session, agent connection) with short-lived streams, at the same
    // concurrency as below: V8's young generation grows with the allocation rate, and that
    // growth is not memory per idle stream. None stays open (freed memory would be reused).
    let warm = 0
    await Promise.all(
      Array.from({ length: Math.min(inFlight, n) }, async () => {
        while (warm++ < warmup) await cycle(session, token)
      }),
    )
    await sleep(500)
    const gw0 = rssKiB(pids.gateway)
    const ag0 = rssKiB(pids.agent)
    let next = 0
    let errors = 0
    let firstError: string | undefined
    const t0 = performance.now()
    await Promise.all(
      Array.from({ length: Math.min(inFlight, n) }, async () => {
        while (next < n) {
          next++
          try {
            streams.push(await openEchoStream(session, token))
          } catch (err) {
            errors++
            firstError ??= (err as Error).message
          }
        }
      }),
    )
    const openMs = performance.now() - t0
    await sleep(500)
    const gw1 = rssKiB(pids.gateway)
    const ag1 = rssKiB(pids.agent)
    const ok = streams.filter((s) => !s.closed && !s.destroyed).length
    const result: ManyStreamsResult = {
      target: n,
      ok,
      errors,
      openMs: Math.round(openMs),
      gatewayRssBeforeKiB: gw0,
      gatewayRssAfterKiB: gw1,
      gatewayKiBPerStream: Math.round(((gw1 - gw0) / Math.max(1, ok)) * 10) / 10,
      agentKiBPerStream: Math.round(((ag1 - ag0) / Math.max(1, ok)) * 10) / 10,
    }
    if (firstError !== undefined) result.firstError = firstError
    return result
  } finally {
    await Promise.race([Promise.all(streams.map(closeEchoStream)), sleep(30_000)])
    session.close()
  }
}

/** Stream opens per second: `concurrency` workers doing open-echo-close for `ms`. */
export async function openRate(
  session: ClientHttp2Session,
  token: string,
  concurrency: number,
  ms: number,
): Promise<{ perSec: number; errors: number }> {
  let count = 0
  let errors = 0
  const start = performance.now()
  const end = start + ms
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        try {
          await cycle(session, token)
          count++
        } catch {
          errors++
        }
      }
    }),
  )
  return { perSec: count / ((performance.now() - start) / 1000), errors }
}
