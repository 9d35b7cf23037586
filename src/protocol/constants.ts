/**
 * Names shared by every pfgate component on the wire: paths, headers, ALPN ids.
 *
 * @module
 */

/** Version of the native HTTP/2 stream contract (docs/protocol.md). */
export const NATIVE_PROTOCOL_VERSION = 'v1'

/** The request header that names the pod port, on the client→gateway and gateway→agent hops. */
export const PORT_HEADER = 'port'

/** Response header naming the stream id the gateway assigned (for audit correlation). */
export const STREAM_ID_HEADER = 'pfgate-stream-id'

/** Request header carrying the gateway's stream id to the agent (for correlated logs). */
export const GATEWAY_STREAM_ID_HEADER = 'pfgate-gateway-stream-id'

/**
 * Request header naming the pod UID the gateway resolved. The agent finds the pod by
 * this UID in its container runtime, and refuses a UID it does not run.
 */
export const POD_UID_HEADER = 'pfgate-pod-uid'

/** Client-facing native path: `/proxy/nodes/{node}/portForward/{ns}/{pod}`. */
export function nativePortForwardPath(node: string, namespace: string, pod: string): string {
  return `/proxy/nodes/${encodeURIComponent(node)}/portForward/${encodeURIComponent(namespace)}/${encodeURIComponent(pod)}`
}

/** Agent path: `/portForward/{ns}/{pod}` (the kubelet's). */
export function agentPortForwardPath(namespace: string, pod: string): string {
  return `/portForward/${encodeURIComponent(namespace)}/${encodeURIComponent(pod)}`
}

/** Kubernetes pod GET path. */
export function podPath(namespace: string, pod: string): string {
  return `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}`
}

/** The certificate identity (CN and URI SAN) of the gateway on the agent hop. */
export const GATEWAY_IDENTITY_CN = 'pfgate-gateway'
/** URI SAN of the gateway's client certificate. */
export const GATEWAY_IDENTITY_URI = 'spiffe://pfgate.local/gateway'

/**
 * Reverse connections (docs/scaling.md): the gateway's first request on a connection an
 * agent dialed, with the replica's id and the number of replicas; the agent answers 200
 * with its node's name, or 409 when it already holds a connection to that replica.
 */
export const REVERSE_HELLO_PATH = '/v1/reverse/hello'
export const REPLICA_ID_HEADER = 'pfgate-replica-id'
export const REPLICA_COUNT_HEADER = 'pfgate-replica-count'
export const NODE_NAME_HEADER = 'pfgate-node'
