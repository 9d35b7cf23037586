/**
 * The {@link StreamDialer} of `pfgate port-forward`: native HTTP/2 streams through the
 * gateway to one pod. When the pod moved to another node, the pod is looked up again and
 * the open retried once.
 *
 * @module
 */
import type { ClientHttp2Stream } from 'node:http2'
import { nativePortForwardPath, PORT_HEADER } from '../../protocol/constants.js'
import { RST, resetCodeName } from '../../protocol/reset-codes.js'
import { PROTOCOL_HEADER, UDP_PROTOCOL } from '../../protocol/udp-frames.js'
import { h2Endpoint, resetStream } from '../../shared/relay-endpoints.js'
import type { RelayEndpoint } from '../../shared/duplex-relay.js'
import { GatewayHttpError } from '../gateway-client.js'
import type { GatewayClient } from '../gateway-client.js'
import type { PodStream, StreamDialer } from './serve.js'
import { fetchPod } from './target.js'
import { nativeTargetPath } from '../../protocol/targets.js'
import type { TargetRef } from '../../protocol/targets.js'

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({})

class GatewayPodStream implements PodStream {
  readonly endpoint: RelayEndpoint
  readonly #stream: ClientHttp2Stream

  constructor(stream: ClientHttp2Stream) {
    this.#stream = stream
    this.endpoint = h2Endpoint(stream, RST.CANCEL)
  }

  cancel(): void {
    resetStream(this.#stream, RST.CANCEL)
  }

  resetDescription(): string | undefined {
    const code = this.#stream.rstCode
    return code !== undefined ? `stream reset (${resetCodeName(code)})` : undefined
  }
}

/** Streams to pod `name` in `namespace` on `nodeName` (updated when the pod moved). */
export class GatewayDialer implements StreamDialer {
  readonly #client: GatewayClient
  readonly #namespace: string
  readonly #target: TargetRef
  #nodeName: string
  /** The stream path for `#nodeName` (built once, not per connection). */
  #path: string

  /** `nodeName`: a pod's node (the seed path); unused for a service or workload. */
  constructor(client: GatewayClient, namespace: string, target: TargetRef, nodeName: string) {
    this.#client = client
    this.#namespace = namespace
    this.#target = target
    this.#nodeName = nodeName
    this.#path = this.#pathFor(nodeName)
  }

  #pathFor(nodeName: string): string {
    const t = this.#target
    return t.kind === 'pod'
      ? nativePortForwardPath(nodeName, this.#namespace, t.name)
      : nativeTargetPath(this.#namespace, t.kind, t.name)
  }

  async dial(remotePort: number | string): Promise<PodStream> {
    return new GatewayPodStream(await this.#open(remotePort, NO_HEADERS, true))
  }

  /** Opens one UDP flow's stream (docs/protocol.md, "UDP flows"); retried once when the pod moved. */
  openUdpFlow(remotePort: number | string): Promise<ClientHttp2Stream> {
    return this.#open(remotePort, { [PROTOCOL_HEADER]: UDP_PROTOCOL }, true)
  }

  async #open(
    remotePort: number | string,
    extra: Record<string, string>,
    retry: boolean,
  ): Promise<ClientHttp2Stream> {
    const t = this.#target
    try {
      return await this.#client.openStream(this.#path, {
        [PORT_HEADER]: String(remotePort),
        ...extra,
      })
    } catch (e) {
      if (
        e instanceof GatewayHttpError &&
        e.errorCode === 'PFG_ERR_ROUTE_WRONG_NODE' &&
        retry &&
        t.kind === 'pod'
      ) {
        // The pod moved: learn its new node and try once more.
        try {
          const fresh = await fetchPod(this.#client, this.#namespace, t.name)
          this.#nodeName = fresh.spec?.nodeName ?? this.#nodeName
          this.#path = this.#pathFor(this.#nodeName)
          return await this.#open(remotePort, extra, false)
        } catch {
          // fall through to the first error
        }
      }
      throw e
    }
  }
}
