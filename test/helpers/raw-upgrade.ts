/**
 * Test helpers: raw HTTP/1.1 upgrades to the gateway over TLS with no ALPN (as
 * kubectl's upgrade connections arrive), a minimal client-side WebSocket framer (so
 * tests can send what the `ws` client refuses to: the `SPDY/3.1+…` subprotocol,
 * malformed frames), and the WebSocket's binary messages as a byte stream for the
 * SPDY test client.
 */
import { createHash, randomBytes } from 'node:crypto'
import { Duplex } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import type { TLSSocket } from 'node:tls'

/** A parsed HTTP/1.1 response head, with what followed it. */
export interface RawResponse {
  status: number
  headers: Record<string, string>
  /** The body of a non-101 answer (read to the connection's end or Content-Length). */
  body: string
  /** Bytes after the head of a 101 (the start of the upgraded protocol). */
  rest: Buffer
  socket: TLSSocket
}

/** Opens TLS to the gateway without ALPN, trusting `ca`. */
export function connectTls(port: number, ca: string | Buffer): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' })
    s.once('secureConnect', () => {
      s.off('error', reject)
      resolve(s)
    })
    s.once('error', reject)
  })
}

/**
 * Sends one HTTP/1.1 request on a fresh TLS connection and reads the answer's head
 * (and, for a non-101, its body). The socket is left open for a 101.
 */
export async function rawRequest(
  port: number,
  ca: string | Buffer,
  method: string,
  path: string,
  headers: Record<string, string>,
  timeoutMs = 10_000,
  /** Bytes sent right behind the request, before any answer (e.g. a first frame). */
  glued?: Buffer,
): Promise<RawResponse> {
  const socket = await connectTls(port, ca)
  const lines = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`]
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
  const head = Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1')
  socket.write(glued === undefined ? head : Buffer.concat([head, glued]))
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    let head: { status: number; headers: Record<string, string>; bodyStart: number } | undefined
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no complete answer to ${method} ${path} within ${timeoutMs} ms`))
    }, timeoutMs)
    let settledHead = false
    const finish = (r: RawResponse): void => {
      settledHead = true
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('end', onEnd)
      resolve(r)
    }
    const onEnd = (): void => {
      if (settledHead) return
      if (head === undefined) {
        settledHead = true
        clearTimeout(timer)
        reject(new Error(`connection ended before an answer to ${method} ${path}`))
        return
      }
      finish({
        ...head,
        body: buf.subarray(head.bodyStart).toString(),
        rest: Buffer.alloc(0),
        socket,
      })
    }
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk])
      if (head === undefined) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const [statusLine, ...hl] = buf.subarray(0, end).toString('latin1').split('\r\n')
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0)
        const h: Record<string, string> = {}
        for (const l of hl) {
          const i = l.indexOf(':')
          if (i > 0) h[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
        }
        head = { status, headers: h, bodyStart: end + 4 }
        if (status === 101) {
          finish({ status, headers: h, body: '', rest: buf.subarray(end + 4), socket })
          return
        }
      }
      const len = Number(head.headers['content-length'] ?? NaN)
      if (Number.isFinite(len) && buf.length - head.bodyStart >= len) {
        finish({
          ...head,
          body: buf.subarray(head.bodyStart, head.bodyStart + len).toString(),
          rest: Buffer.alloc(0),
          socket,
        })
      }
    }
    socket.on('data', onData)
    socket.once('end', onEnd)
    // A reset instead of a FIN: answer with what arrived, or fail, at once.
    socket.once('close', () => {
      if (settledHead === false) onEnd()
    })
    socket.on('error', () => {})
  })
}

/** The headers of a SPDY/3.1 upgrade request (kubectl's). */
export function spdyUpgradeHeaders(token: string | undefined): Record<string, string> {
  return {
    'User-Agent': 'pfgate-test/spdy',
    'Content-Length': '0',
    Connection: 'Upgrade',
    Upgrade: 'SPDY/3.1',
    'X-Stream-Protocol-Version': 'portforward.k8s.io',
    ...(token !== undefined ? { Authorization: `Bearer ${token}` } : {}),
  }
}

/** The headers of a WebSocket upgrade request offering `protocols`. */
export function wsUpgradeHeaders(
  token: string | undefined,
  protocols: string[],
): Record<string, string> {
  return {
    'User-Agent': 'pfgate-test/ws',
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    ...(protocols.length > 0 ? { 'Sec-WebSocket-Protocol': protocols.join(', ') } : {}),
    ...(token !== undefined ? { Authorization: `Bearer ${token}` } : {}),
  }
}

/** The expected `Sec-WebSocket-Accept` for a key. */
export function wsAccept(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
}

/** WebSocket opcodes. */
export const WS_OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 } as const

/** Encodes one client frame (masked unless `mask` is false; `rsv` sets reserved bits). */
export function encodeWsFrame(
  opcode: number,
  payload: Buffer,
  options: { fin?: boolean; mask?: boolean; rsv?: number; lengthOverride?: number } = {},
): Buffer {
  const fin = options.fin ?? true
  const mask = options.mask ?? true
  const len = options.lengthOverride ?? payload.length
  const head: number[] = [(fin ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | (opcode & 0x0f)]
  const m = mask ? 0x80 : 0
  let ext = Buffer.alloc(0)
  if (len < 126) head.push(m | len)
  else if (len < 65536) {
    head.push(m | 126)
    ext = Buffer.alloc(2)
    ext.writeUInt16BE(len)
  } else {
    head.push(m | 127)
    ext = Buffer.alloc(8)
    ext.writeBigUInt64BE(BigInt(len))
  }
  if (!mask) return Buffer.concat([Buffer.from(head), ext, payload])
  const key = randomBytes(4)
  const body = Buffer.from(payload)
  for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!
  return Buffer.concat([Buffer.from(head), ext, key, body])
}

/** One server frame. */
export interface WsFrame {
  fin: boolean
  opcode: number
  payload: Buffer
}

/** Parses server frames (unmasked) from a byte stream. */
export class WsFrameReader {
  #buf: Buffer = Buffer.alloc(0)

  push(chunk: Buffer): WsFrame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk])
    const out: WsFrame[] = []
    for (;;) {
      const b = this.#buf
      if (b.length < 2) break
      let len = b[1]! & 0x7f
      let off = 2
      if (len === 126) {
        if (b.length < 4) break
        len = b.readUInt16BE(2)
        off = 4
      } else if (len === 127) {
        if (b.length < 10) break
        len = Number(b.readBigUInt64BE(2))
        off = 10
      }
      if ((b[1]! & 0x80) !== 0) off += 4 // a masked server frame would be a bug; skip the key
      if (b.length < off + len) break
      out.push({
        fin: (b[0]! & 0x80) !== 0,
        opcode: b[0]! & 0x0f,
        payload: b.subarray(off, off + len),
      })
      this.#buf = b.subarray(off + len)
    }
    return out
  }
}

/** A client WebSocket on an upgraded socket: messages in, frames out. */
export class RawWebSocket {
  readonly socket: TLSSocket
  readonly #reader = new WsFrameReader()
  /** Whole messages received (binary and text), in order. */
  readonly messages: { binary: boolean; data: Buffer }[] = []
  /** The close code the server sent, once it did. */
  closeCode: number | undefined
  onMessage: ((binary: boolean, data: Buffer) => void) | undefined
  #fragments: Buffer[] = []
  #fragmentBinary = true
  readonly closed: Promise<void>

  constructor(socket: TLSSocket, rest: Buffer) {
    this.socket = socket
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()))
    socket.on('data', (c: Buffer) => this.#onData(c))
    if (rest.length > 0) this.#onData(rest)
  }

  #onData(chunk: Buffer): void {
    for (const f of this.#reader.push(chunk)) {
      if (f.opcode === WS_OP.CLOSE) {
        this.closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005
        if (!this.socket.destroyed)
          this.socket.end(encodeWsFrame(WS_OP.CLOSE, f.payload.subarray(0, 2)))
        continue
      }
      if (f.opcode === WS_OP.PING) {
        this.sendFrame(WS_OP.PONG, f.payload)
        continue
      }
      if (f.opcode === WS_OP.PONG) continue
      if (f.opcode !== WS_OP.CONT) {
        this.#fragments = []
        this.#fragmentBinary = f.opcode === WS_OP.BINARY
      }
      this.#fragments.push(Buffer.from(f.payload))
      if (f.fin) {
        const data = Buffer.concat(this.#fragments)
        this.#fragments = []
        this.messages.push({ binary: this.#fragmentBinary, data })
        this.onMessage?.(this.#fragmentBinary, data)
      }
    }
  }

  sendFrame(opcode: number, payload: Buffer, options?: Parameters<typeof encodeWsFrame>[2]): void {
    if (!this.socket.destroyed && this.socket.writable) {
      this.socket.write(encodeWsFrame(opcode, payload, options))
    }
  }

  sendBinary(data: Buffer): void {
    this.sendFrame(WS_OP.BINARY, data)
  }

  sendText(data: string): void {
    this.sendFrame(WS_OP.TEXT, Buffer.from(data))
  }

  close(code = 1000): void {
    const p = Buffer.alloc(2)
    p.writeUInt16BE(code)
    this.sendFrame(WS_OP.CLOSE, p)
  }

  /**
   * The binary messages as one byte stream (the SPDY tunnel): each write is cut into
   * messages of at most `maxPiece` bytes (kubectl sends tiny ones), with an empty
   * message now and then.
   */
  byteStream(maxPiece = 64 * 1024): Duplex {
    let n = 0
    const d = new Duplex({
      read: () => {},
      write: (chunk: Buffer, _enc, cb) => {
        for (let off = 0; off < chunk.length;) {
          const piece = Math.min(chunk.length - off, 1 + (n++ % maxPiece))
          this.sendBinary(chunk.subarray(off, off + piece))
          if (n % 7 === 0) this.sendBinary(Buffer.alloc(0))
          off += piece
        }
        cb()
      },
      final: (cb) => {
        this.close(1000)
        cb()
      },
    })
    this.onMessage = (binary, data) => {
      if (binary) d.push(data)
    }
    for (const m of this.messages) if (m.binary) d.push(m.data)
    this.socket.once('close', () => d.push(null))
    return d
  }
}
