/**
 * Port-forward paths reached without the protocol they need. A Kubernetes port-forward
 * path needs an upgrade (SPDY or WebSocket: edge/upgrade.ts takes those before Fastify);
 * a plain request is the apiserver's 400. The native path needs HTTP/2 (the raw stream
 * takeover in stream-takeover.ts takes it before Fastify); over HTTP/1.1 without an
 * upgrade it cannot carry a half-closable stream.
 *
 * @module
 */
import { appError } from '../../shared/errors.js'
import type { GatewayPlugin } from './types.js'

/** The 400s of the port-forward paths. */
export const forwardPathRoutes: GatewayPlugin = async (app) => {
  for (const path of [
    '/api/v1/namespaces/:ns/pods/:pod/portforward',
    '/api/v1/nodes/:node/proxy/portForward/:ns/:pod',
  ]) {
    app.all(path, async () => {
      throw appError('PFG_ERR_PROTO_UPGRADE_REQUIRED', 'Upgrade request required')
    })
  }
  app.all('/proxy/nodes/:node/portForward/:ns/:pod', async () => {
    throw appError(
      'PFG_ERR_PROTO_HTTP2_REQUIRED',
      'native port-forward needs HTTP/2 (or a SPDY/WebSocket upgrade on the Kubernetes paths)',
    )
  })
}
