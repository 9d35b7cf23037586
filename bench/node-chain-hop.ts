/**
 * One hop of the minimal Node TLS pipe chain (bench/node-chain.ts): a listener whose every
 * connection is piped both ways to a connection to the next hop, with half-close, and
 * nothing else — no HTTP/2, no audit, no authorization. It is the floor of what Node's
 * stream piping over the same TLS hops costs, the baseline pfgate's relay is held to.
 *
 * `node dist/bench/node-chain-hop.js ROLE LISTEN_PORT NEXT_PORT PKI_DIR`, ROLE one of
 * - `client`: clear TCP in, TLS out (verifies the gateway's certificate), like the CLI;
 * - `gateway`: TLS in (the gateway's certificate), mutual TLS out (the gateway's client
 *   certificate), like the gateway;
 * - `agent`: mutual TLS in (the node's certificate, client certificates required), clear
 *   TCP out, like the agent.
 * Prints `listening` on stdout once it accepts connections.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import net from 'node:net'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import tls from 'node:tls'
import { join2 } from './join-pipes.js'

type Role = 'client' | 'gateway' | 'agent'

const [role, listenArg, nextArg, pkiDir] = process.argv.slice(2) as [Role, string, string, string]
if (!['client', 'gateway', 'agent'].includes(role) || pkiDir === undefined) {
  process.stderr.write(
    'usage: node-chain-hop.js client|gateway|agent LISTEN_PORT NEXT_PORT PKI_DIR\n',
  )
  process.exit(2)
}
const pem = (name: string): Buffer => readFileSync(join(pkiDir, name))
const nextPort = Number(nextArg)

function dialNext(): Socket {
  if (role === 'agent') {
    return net.connect({ host: '127.0.0.1', port: nextPort, noDelay: true, allowHalfOpen: true })
  }
  const ca = pem('ca.crt')
  // allowHalfOpen is honoured by tls.connect (it is passed to the TLSSocket), not typed.
  const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
    host: '127.0.0.1',
    port: nextPort,
    ca,
    allowHalfOpen: true,
    ...(role === 'gateway'
      ? { cert: pem('gateway-client.crt'), key: pem('gateway-client.key') }
      : {}),
  }
  return tls.connect(options)
}

const onConnection = (s: Socket): void => {
  s.setNoDelay(true)
  join2(s, dialNext())
}
const server =
  role === 'client'
    ? net.createServer({ allowHalfOpen: true }, onConnection)
    : tls.createServer(
        {
          allowHalfOpen: true,
          ...(role === 'gateway'
            ? { cert: pem('gateway.crt'), key: pem('gateway.key') }
            : {
                cert: pem('agent-node-a.crt'),
                key: pem('agent-node-a.key'),
                ca: pem('ca.crt'),
                requestCert: true,
                rejectUnauthorized: true,
              }),
        },
        onConnection,
      )
server.listen(Number(listenArg), '127.0.0.1', () => process.stdout.write('listening\n'))
process.on('SIGTERM', () => process.exit(0))
