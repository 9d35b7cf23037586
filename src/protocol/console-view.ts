/**
 * What the admin console's live view exchanges with the gateway: the views of live
 * sessions and streams and the samples the page receives once a second. Types only, with
 * no imports, so the browser bundle (src/console-ui) and the gateway share one definition.
 *
 * @module
 */

/** A live client session as the console shows it. */
export interface ConsoleSessionView {
  id: string
  /** Every user that authenticated on the connection. */
  users: string[]
  protocol: string
  sourceAddress: string
  userAgent?: string
  openedAt: string
  streams: number
  bytesClientToPod: number
  bytesPodToClient: number
}

/** A live stream as the console shows it. */
export interface ConsoleStreamView {
  id: string
  sessionId: string
  user: string
  sourceAddress: string
  protocol: string
  namespace: string
  pod: string
  node: string
  port: number
  /** The service or workload the client named, when it forwarded to one (`svc/echo:80`, `deploy/web:http`). */
  service?: string
  /** `udp` for a UDP flow (TCP when absent). */
  transport?: string
  openedAt: string
  bytesClientToPod: number
  bytesPodToClient: number
}

/** One point of the gateway-wide charts (rates per second over the last interval). */
export interface GatewayPoint {
  /** ms since epoch. */
  t: number
  opensPerSec: number
  bytesPerSec: number
  denialsPerSec: number
  sessions: number
  streams: number
}

/** A live stream with its current rates (bytes per second over the last interval). */
export interface StreamSample extends ConsoleStreamView {
  rateClientToPod: number
  ratePodToClient: number
}

/** What a watching page receives every interval. */
export interface LiveSample {
  gateway: GatewayPoint
  sessions: ConsoleSessionView[]
  streams: StreamSample[]
  /** How many there were when the lists were cut at {@link MAX_LISTED}. */
  totalSessions: number
  totalStreams: number
}
