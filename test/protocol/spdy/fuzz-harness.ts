/**
 * Seeded fuzzing of the SPDY framer, header codec, session + port-forward layer and
 * the v4 channel codec. Used by fuzz.test.ts (bounded, a few seconds) and by
 * scripts/fuzz-protocols.mjs (long runs: `--seconds`, `--iterations`, `--seed`).
 *
 * Inputs are kubectl-like client byte streams (made with the test client, so the
 * header blocks are real zlib), mutated (bit flips, byte changes, truncation,
 * insertion, duplication, splicing), plus random frames and random bytes, fed in
 * random chunk sizes. What must hold:
 * - nothing ever throws out of an event handler (no uncaught exception);
 * - the parser and codec throw only their documented errors;
 * - every fuzzed session ends (its 'close' fires) and leaves no timer behind;
 * - memory stays bounded (parser buffer, output written, heap);
 * - a healthy session running alongside is unaffected.
 *
 * @module
 */
import { Duplex } from 'node:stream'
import { once } from 'node:events'
import {
  DEFAULT_MAX_CONTROL_FRAME_SIZE,
  FrameParser,
  SpdyProtocolError,
  encodeDataFrame,
  encodeGoaway,
  encodePing,
  encodeRstStream,
} from '../../../src/protocol/spdy/frames.js'
import { HeaderCodec, parseHeaderBlock } from '../../../src/protocol/spdy/header-codec.js'
import { SpdySession } from '../../../src/protocol/spdy/session.js'
import { servePortForward } from '../../../src/protocol/spdy/portforward.js'
import {
  decodeChannelMessage,
  parsePortsQuery,
  selectChannelProtocol,
} from '../../../src/protocol/ws-channel.js'
import { isAppError } from '../../../src/shared/errors.js'
import {
  SpdyTestClient,
  encodeControlFrame,
  encodeHeadersFrame,
  encodeSettings,
  encodeSynStream,
  encodeWindowUpdate,
} from './spdy-test-client.js'

/** A small fast seeded PRNG (mulberry32). */
export function prng(seed: number): {
  next: () => number
  int: (n: number) => number
  bytes: (n: number) => Buffer
} {
  let a = seed >>> 0
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (n: number): number => Math.floor(next() * n)
  const bytes = (n: number): Buffer => {
    const b = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) b[i] = int(256)
    return b
  }
  return { next, int, bytes }
}

type Rng = ReturnType<typeof prng>

/** An in-memory transport: the session reads what we push and we count what it writes. */
class MemoryTransport extends Duplex {
  written = 0
  /** Where the session's output goes (optional). */
  sink: ((chunk: Buffer) => void) | undefined
  constructor() {
    super({ allowHalfOpen: true })
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.written += chunk.length
    this.sink?.(chunk)
    cb()
  }
}

/** Two MemoryTransports wired back to back (for the healthy control session). */
function memoryPair(): [MemoryTransport, MemoryTransport] {
  const a = new MemoryTransport()
  const b = new MemoryTransport()
  a.sink = (c) => b.push(c)
  b.sink = (c) => a.push(c)
  a.on('finish', () => b.push(null))
  b.on('finish', () => a.push(null))
  return [a, b]
}

/** Records what a SpdyTestClient writes, to build valid client captures. */
async function captureClientSession(rng: Rng, variant: number): Promise<Buffer> {
  const t = new MemoryTransport()
  const out: Buffer[] = []
  t.sink = (c) => out.push(Buffer.from(c))
  const client = new SpdyTestClient(t)
  const pairs = 1 + (variant % 3)
  for (let i = 0; i < pairs; i++) {
    const port = variant === 4 ? '0' : '5000'
    const err = await client.openStream({ streamtype: 'error', port, requestid: String(i) })
    err.end()
    const data = await client.openStream({ streamtype: 'data', port, requestid: String(i) })
    data.write(rng.bytes(1 + rng.int(3000)))
    client.writeRaw(encodePing(2 * i + 1))
    if (variant % 2 === 0) data.end()
    else data.reset(5)
  }
  client.writeRaw(encodeSettings([{ id: 4, value: 100 }]))
  client.writeRaw(encodeWindowUpdate(1, 65536))
  client.writeRaw(encodeHeadersFrame(3, await client.compress({ x: 'y' })))
  client.writeRaw(encodeGoaway(2 * pairs + 1, 0))
  t.destroy()
  return Buffer.concat(out)
}

function mutate(rng: Rng, input: Buffer, others: Buffer[]): Buffer {
  let b: Buffer = Buffer.from(input)
  const rounds = 1 + rng.int(4)
  for (let r = 0; r < rounds; r++) {
    if (b.length === 0) b = rng.bytes(16)
    switch (rng.int(8)) {
      case 0: // bit flips
        for (let i = 1 + rng.int(8); i > 0; i--) b[rng.int(b.length)]! ^= 1 << rng.int(8)
        break
      case 1: // interesting byte values
        b[rng.int(b.length)] = [0x00, 0xff, 0x80, 0x7f, 0x01, 0x03][rng.int(6)]!
        break
      case 2: // truncate
        b = b.subarray(0, rng.int(b.length + 1))
        break
      case 3: {
        // insert random bytes
        const at = rng.int(b.length + 1)
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(32)), b.subarray(at)])
        break
      }
      case 4: {
        // duplicate a slice
        const from = rng.int(b.length)
        const len = 1 + rng.int(Math.min(256, b.length - from))
        const at = rng.int(b.length + 1)
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)])
        break
      }
      case 5: {
        // splice with another capture
        const o = others[rng.int(others.length)]!
        b = Buffer.concat([b.subarray(0, rng.int(b.length + 1)), o.subarray(rng.int(o.length))])
        break
      }
      case 6: {
        // rewrite a length field somewhere (24-bit at offset 5 of a frame-ish spot)
        const at = rng.int(Math.max(1, b.length - 8))
        if (b.length >= at + 8) b.writeUIntBE(rng.int(0x1000000), at + 5, 3)
        break
      }
      default: {
        // delete a slice
        const from = rng.int(b.length)
        b = Buffer.concat([b.subarray(0, from), b.subarray(from + 1 + rng.int(64))])
      }
    }
  }
  return b
}

function randomFrames(rng: Rng): Buffer {
  const parts: Buffer[] = []
  for (let i = 1 + rng.int(12); i > 0; i--) {
    const kind = rng.int(10)
    const id = rng.int(4) === 0 ? rng.int(0x80000000) : 1 + 2 * rng.int(8)
    if (kind < 3) {
      const len = rng.int(4) === 0 ? rng.int(70_000) : rng.int(64)
      parts.push(encodeDataFrame(Math.max(1, id), rng.bytes(len), rng.int(3) === 0))
    } else if (kind === 3) {
      parts.push(encodeSynStream(Math.max(1, id), rng.bytes(rng.int(40)), rng.int(4)))
    } else if (kind === 4) {
      parts.push(encodeRstStream(Math.max(1, id), rng.int(13)))
    } else if (kind === 5) {
      parts.push(encodePing(1 + rng.int(1000)))
    } else {
      const type = rng.int(14)
      const len = rng.int(5) === 0 ? rng.int(DEFAULT_MAX_CONTROL_FRAME_SIZE + 10) : rng.int(24)
      parts.push(encodeControlFrame(type, rng.int(256), rng.bytes(len), rng.int(10) === 0 ? 2 : 3))
    }
  }
  return Buffer.concat(parts)
}

function chunks(rng: Rng, input: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let off = 0; off < input.length;) {
    const n = rng.int(4) === 0 ? rng.int(8) : 1 + rng.int(4096)
    out.push(input.subarray(off, off + n))
    off += n
  }
  return out
}

/** What a fuzz run found. */
export interface FuzzReport {
  seed: number
  iterations: number
  sessions: number
  /** Sessions that ended with a protocol error (expected for most mutated inputs). */
  protocolErrors: number
  /** Sessions that ended cleanly. */
  cleanEnds: number
  /** Forward requests that reached the port-forward layer's onRequest. */
  requests: number
  parserRuns: number
  codecRuns: number
  /** Largest number of bytes a fuzzed session wrote. */
  maxWritten: number
  /** Largest parser backlog seen in direct parser runs. */
  maxParserBuffered: number
  heapGrowthBytes: number
  /** Problems: anything here is a failure. */
  failures: string[]
  elapsedMs: number
}

/** Options for {@link runFuzz}. */
export interface FuzzOptions {
  seed: number
  /** Stop after this many iterations (default 2000)... */
  iterations?: number
  /** ...or after this long, whichever comes first. */
  timeMs?: number
  /** Sessions run concurrently (default 32). */
  concurrency?: number
  /** Progress callback, called about once a second. */
  progress?: (r: FuzzReport) => void
}

/** Runs the fuzzer; resolves with a report (failures listed, never thrown). */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const started = performance.now()
  const rng = prng(options.seed)
  const maxIterations = options.iterations ?? 2000
  const deadline = started + (options.timeMs ?? Number.POSITIVE_INFINITY)
  const concurrency = options.concurrency ?? 32
  const report: FuzzReport = {
    seed: options.seed,
    iterations: 0,
    sessions: 0,
    protocolErrors: 0,
    cleanEnds: 0,
    requests: 0,
    parserRuns: 0,
    codecRuns: 0,
    maxWritten: 0,
    maxParserBuffered: 0,
    heapGrowthBytes: 0,
    failures: [],
    elapsedMs: 0,
  }
  const fail = (msg: string): void => {
    if (report.failures.length < 50) report.failures.push(msg)
  }
  const onUncaught = (err: Error): void => fail(`uncaught exception: ${err.stack ?? String(err)}`)
  process.on('uncaughtException', onUncaught)
  const timersBefore = countTimers()
  const heapBefore = process.memoryUsage().heapUsed

  // The healthy neighbour: a session that must keep working throughout.
  const [serverSide, clientSide] = memoryPair()
  const healthy = new SpdySession(serverSide)
  healthy.on('stream', (s) => {
    s.reply()
    s.pipe(s)
  })
  const healthyClient = new SpdyTestClient(clientSide)
  await healthyClient.ping(1)

  try {
    const captures: Buffer[] = []
    for (let v = 0; v < 6; v++) captures.push(await captureClientSession(rng, v))

    let lastProgress = performance.now()
    // A pool: keep `concurrency` sessions in flight; start one as soon as one ends.
    const worker = async (): Promise<void> => {
      while (report.iterations < maxIterations && performance.now() < deadline) {
        report.iterations++
        const input = pickInput(rng, captures)
        fuzzParser(rng, input, report, fail)
        if (rng.int(4) === 0) fuzzCodecs(rng, input, report, fail)
        await fuzzSession(rng, input, report, fail)
        if (options.progress !== undefined && performance.now() - lastProgress > 1000) {
          lastProgress = performance.now()
          report.elapsedMs = performance.now() - started
          options.progress(report)
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))

    // The neighbour still works: a ping and a stream round trip.
    await withTimeout(healthyClient.ping(3), 2000, 'healthy session ping')
    const s = await healthyClient.openStream({ streamtype: 'data', port: '1', requestid: 'h' })
    s.write(Buffer.from('still alive'), true)
    await withTimeout(s.ended, 2000, 'healthy session echo')
    if (s.text() !== 'still alive') fail('healthy session echo was wrong')
  } catch (err) {
    fail(`harness: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  } finally {
    healthy.destroy()
    clientSide.destroy()
    await new Promise((r) => setImmediate(r))
    process.off('uncaughtException', onUncaught)
  }
  const timersAfter = countTimers()
  if (timersAfter > timersBefore) fail(`${timersAfter - timersBefore} timers left behind`)
  report.heapGrowthBytes = process.memoryUsage().heapUsed - heapBefore
  report.elapsedMs = performance.now() - started
  return report
}

function pickInput(rng: Rng, captures: Buffer[]): Buffer {
  const r = rng.int(10)
  if (r < 6) return mutate(rng, captures[rng.int(captures.length)]!, captures)
  if (r < 8) return randomFrames(rng)
  if (r < 9) return rng.bytes(rng.int(2048))
  return captures[rng.int(captures.length)]!
}

function countTimers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)
    }),
  ])
}

function fuzzParser(rng: Rng, input: Buffer, report: FuzzReport, fail: (m: string) => void): void {
  report.parserRuns++
  const max = 1024 + rng.int(8192)
  const parser = new FrameParser({ maxControlFrameSize: max })
  try {
    for (const c of chunks(rng, input)) {
      parser.push(c)
      for (let f = parser.next(); f !== null; f = parser.next()) {
        if (f.kind === 'data' && f.data.length > c.length) {
          fail('DATA piece larger than its chunk')
        }
      }
      report.maxParserBuffered = Math.max(report.maxParserBuffered, parser.bufferedBytes)
      if (parser.bufferedBytes > max + 8 + c.length) {
        fail(`parser holds ${parser.bufferedBytes} bytes (cap ${max})`)
      }
    }
  } catch (err) {
    if (!(err instanceof SpdyProtocolError)) fail(`parser threw ${String(err)}`)
  }
}

function fuzzCodecs(rng: Rng, input: Buffer, report: FuzzReport, fail: (m: string) => void): void {
  report.codecRuns++
  const slice = input.subarray(rng.int(input.length + 1))
  try {
    parseHeaderBlock(slice)
  } catch (err) {
    if (!(err instanceof SpdyProtocolError)) fail(`parseHeaderBlock threw ${String(err)}`)
  }
  for (const [data, isBinary, enc] of [
    [slice, true, 'binary'],
    [slice.toString('latin1'), false, 'base64'],
    [slice, false, 'base64'],
    [slice.toString('base64'), false, 'base64'],
  ] as const) {
    try {
      decodeChannelMessage(data, isBinary, enc)
    } catch (err) {
      if (!isAppError(err)) fail(`decodeChannelMessage threw ${String(err)}`)
    }
  }
  const text = slice.toString('latin1')
  try {
    parsePortsQuery(text)
  } catch (err) {
    if (!isAppError(err)) fail(`parsePortsQuery threw ${String(err)}`)
  }
  try {
    selectChannelProtocol(text)
  } catch (err) {
    fail(`selectChannelProtocol threw ${String(err)}`)
  }
  // The async codec: never throws, always answers.
  const codec = new HeaderCodec({ maxHeaderBlockSize: 4096 })
  codec.decode(slice, () => codec.close())
}

async function fuzzSession(
  rng: Rng,
  input: Buffer,
  report: FuzzReport,
  fail: (m: string) => void,
): Promise<void> {
  report.sessions++
  const transport = new MemoryTransport()
  const session = new SpdySession(transport, {
    maxControlFrameSize: 1024 + rng.int(8192),
    maxHeaderBlockSize: 4096,
    closeTimeoutMs: 50,
    streamHighWaterMark: 1024 + rng.int(65536),
    maxConcurrentStreams: 1 + rng.int(16),
  })
  const mode = rng.int(5)
  servePortForward(session, {
    streamCreationTimeoutMs: 5 + rng.int(30),
    onRequest: (req) => {
      report.requests++
      switch (mode) {
        case 0:
          req.data.pipe(req.data)
          return
        case 1:
          req.fail('error forwarding port: fuzz')
          return
        case 2:
          req.reset()
          return
        case 3:
          req.data.resume()
          req.data.write('x')
          req.finish()
          return
        default:
          // a slow consumer: starts reading later
          setTimeout(() => req.data.resume(), 5 + rng.int(20))
          return
      }
    },
  })
  const closed = once(session, 'close') as Promise<[Error | undefined]>
  const pieces = chunks(rng, input)
  for (const c of pieces) {
    transport.push(c)
    if (rng.int(8) === 0) await new Promise((r) => setImmediate(r))
  }
  const ending = rng.int(4)
  if (ending === 0) session.destroy()
  else if (ending === 1) session.close()
  else transport.push(null)
  try {
    const [err] = await withTimeout(closed, 3000, 'fuzzed session close')
    if (err === undefined) report.cleanEnds++
    else report.protocolErrors++
  } catch (err) {
    fail(`${String(err)} (input ${input.length} bytes, ending ${ending}, mode ${mode})`)
    session.destroy()
  }
  report.maxWritten = Math.max(report.maxWritten, transport.written)
  if (transport.written > 4 * input.length + 64 * 1024) {
    fail(`session wrote ${transport.written} bytes for ${input.length} bytes of input`)
  }
  if (!transport.destroyed) transport.destroy()
}
