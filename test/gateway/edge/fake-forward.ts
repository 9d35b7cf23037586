/**
 * A fake forward service for the edge adapters' tests (as client-go tests its
 * port-forwarder against a fake dialer): each open waits until the test answers it — with
 * a pod side that echoes what the client sends in upper case, or with a refusal — and
 * everything the adapter asked is noted.
 */
import { Duplex } from 'node:stream'
import type { ClientHttp2Stream } from 'node:http2'
import { ClientSession } from '../../../src/gateway/forward/stream-table.js'
import type { ClientSessionInfo, LiveStream } from '../../../src/gateway/forward/stream-table.js'
import type {
  AdmitRequest,
  ForwardRequest,
  ForwardService,
  OpenedForward,
} from '../../../src/gateway/forward/service.js'
import type { RelayEndpoint } from '../../../src/shared/duplex-relay.js'
import type { AppError } from '../../../src/shared/errors.js'
import type { Identity } from '../../../src/gateway/auth/authenticator.js'

const ALICE: Identity = { user: 'alice', groups: ['system:authenticated'], expiresAt: 0 }

/** The pod side of an opened stream: it answers each chunk in upper case, and ends when the client does. */
export class PodSide extends Duplex {
  readonly got: Buffer[] = []
  override _read(): void {}
  override _write(chunk: Buffer, _e: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.got.push(chunk)
    this.push(Buffer.from(chunk.toString().toUpperCase()))
    cb()
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.push(null)
    cb()
  }
}

/** One open the adapter asked for. */
export interface PendingOpen {
  req: ForwardRequest
  /** Answers it: the agent said 200. */
  accept(): OpenedForward & { pod$: PodSide }
  /** Answers it: refused. */
  refuse(err: unknown): void
  /** What became of it: `started` with the endpoint, or `cancelled`. */
  outcome: { started?: RelayEndpoint; cancelled?: string }
}

export class FakeForwardService implements ForwardService {
  readonly sessions: ClientSession[] = []
  readonly ended: ClientSession[] = []
  readonly opens: PendingOpen[] = []
  readonly admits: AdmitRequest[] = []
  readonly unresponsive: string[] = []
  #waiters: ((p: PendingOpen) => void)[] = []
  /** What admit answers (undefined: admitted as alice). */
  admitError: AppError | undefined

  newSession(info: ClientSessionInfo): ClientSession {
    const s = new ClientSession(`c-${this.sessions.length + 1}`, info, 0)
    this.sessions.push(s)
    return s
  }

  endSession(session: ClientSession): void {
    this.ended.push(session)
  }

  clientUnresponsive(session: ClientSession, why: string): void {
    this.unresponsive.push(`${session.id}: ${why}`)
  }

  admit(req: AdmitRequest): Promise<Identity> {
    this.admits.push(req)
    return this.admitError !== undefined ? Promise.reject(this.admitError) : Promise.resolve(ALICE)
  }

  open(req: ForwardRequest): Promise<OpenedForward> {
    return new Promise((resolve, reject) => {
      const outcome: PendingOpen['outcome'] = {}
      const p: PendingOpen = {
        req,
        outcome,
        accept: () => {
          const pod = new PodSide()
          const opened = {
            streamId: `s-${this.opens.indexOf(p) + 1}`,
            pod: {
              namespace: req.namespace,
              name: req.pod,
              uid: 'uid',
              nodeName: 'node-a',
              phase: 'Running',
              ports: [],
            },
            node: { name: 'node-a', address: '127.0.0.1', port: 1 },
            identity: ALICE,
            upstream: pod as unknown as ClientHttp2Stream,
            pod$: pod,
            start: (client: RelayEndpoint): LiveStream => {
              outcome.started = client
              // A plain two-way pipe: the relay itself is tested elsewhere.
              client.stream.pipe(pod)
              pod.pipe(client.stream)
              return {} as LiveStream
            },
            cancel: (reason: string) => {
              outcome.cancelled = reason
            },
          }
          resolve(opened)
          return opened
        },
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the test refuses with anything, a non-Error too
        refuse: (err) => reject(err),
      }
      this.opens.push(p)
      this.#waiters.shift()?.(p)
    })
  }

  /** The next open the adapter asks for (or the one already asked and not yet taken). */
  #taken = 0
  nextOpen(): Promise<PendingOpen> {
    const p = this.opens[this.#taken]
    if (p !== undefined) {
      this.#taken++
      return Promise.resolve(p)
    }
    return new Promise((resolve) =>
      this.#waiters.push((q) => {
        this.#taken++
        resolve(q)
      }),
    )
  }
}
