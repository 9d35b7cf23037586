/**
 * `pfgate port-forward [-n NS] POD [LOCAL:]REMOTE [...]`: `oc port-forward` /
 * `kubectl port-forward` through the gateway. Listens on 127.0.0.1 and [::1]
 * (or `--address`), prints one `Forwarding from` line per listener on stdout,
 * carries every local connection as a stream of one HTTP/2 connection, and on
 * SIGINT/SIGTERM closes every stream, the connection and the listeners.
 *
 * @module
 */
import { createServer, isIP } from 'node:net'
import type { Server, Socket } from 'node:net'
import { setDefaultHighWaterMark } from 'node:stream'
import type { Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import { nativePortForwardPath, podPath, PORT_HEADER } from '../protocol/constants.js'
import { STREAM_HIGH_WATER_MARK } from '../protocol/h2-settings.js'
import { parsePortSpecs } from '../protocol/port-spec.js'
import type { PortSpec } from '../protocol/port-spec.js'
import { RST, resetCodeName } from '../protocol/reset-codes.js'
import { assertNamespace, assertObjectName } from '../protocol/names.js'
import { DuplexRelay } from '../shared/duplex-relay.js'
import { appError, describeError, isAppError } from '../shared/errors.js'
import { h2Endpoint, resetStream, socketEndpoint } from '../shared/relay-endpoints.js'
import { GatewayClient, GatewayHttpError } from './gateway-client.js'
import { loadClientConfig } from './kubeconfig.js'
import { credentialProvider } from './credentials/index.js'
import type { ClientOverrides } from './kubeconfig.js'

/** Standard streams and signals, injectable for tests. */
export interface CliIo {
  stdout: Writable
  stderr: Writable
  env: NodeJS.ProcessEnv
  /** Resolves when the command should stop (SIGINT/SIGTERM). */
  stopSignal: Promise<string>
}

export const PORT_FORWARD_USAGE = `Forward one or more local ports to a pod, through the pfgate gateway.

Usage:
  pfgate port-forward [-n NAMESPACE] POD [LOCAL_PORT:]REMOTE_PORT [...[LOCAL_PORT_N:]REMOTE_PORT_N]

Examples:
  pfgate port-forward echo 5000 6000      # local 5000 and 6000 to the pod's 5000 and 6000
  pfgate port-forward echo 8888:5000      # local 8888 to the pod's 5000
  pfgate port-forward echo :5000          # a free local port to the pod's 5000 (also 0:5000)
  pfgate port-forward pod/web 8080:http   # a named container port

Options:
  -n, --namespace NS              namespace (default: the context's, else "default")
      --address ADDRS             addresses to listen on, comma separated: IPs or localhost (default localhost = 127.0.0.1 and ::1)
      --kubeconfig FILE           kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
      --context NAME              kubeconfig context (default: current-context)
  -s, --server URL                gateway URL, overriding the kubeconfig
      --token TOKEN               bearer token, overriding the kubeconfig
      --certificate-authority F   CA bundle for the gateway's certificate
      --insecure-skip-tls-verify  do not verify the gateway's certificate (insecure)
  -q, --quiet                     do not log each connection
  -h, --help                      this help
`

interface PodDoc {
  kind?: string
  metadata?: { name?: string; namespace?: string }
  spec?: {
    nodeName?: string
    containers?: { ports?: { name?: string; containerPort: number; protocol?: string }[] }[]
  }
  status?: { phase?: string }
}

interface Listener {
  server: Server
  address: string
  localPort: number
  remotePort: number
}

function formatHostPort(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`
}

function expandAddresses(value: string | undefined): string[] {
  const parts = (value ?? 'localhost')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  const out: string[] = []
  for (const p of parts) {
    if (p === 'localhost') out.push('127.0.0.1', '::1')
    else if (isIP(p) !== 0) out.push(p)
    else
      throw appError(
        'PFG_ERR_CLI_USAGE',
        `invalid --address ${JSON.stringify(p)}: use IP addresses or localhost`,
      )
  }
  return [...new Set(out)]
}

function listenOn(address: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true })
    server.once('error', reject)
    server.listen({ host: address, port, ipv6Only: isIP(address) === 6, exclusive: true }, () => {
      server.off('error', reject)
      resolve(server)
    })
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/** Resolves a remote port spec against the pod's container ports (named ports). */
export function resolveRemotePort(spec: PortSpec, pod: PodDoc, podName: string): number {
  const ports = (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? [])
  if (typeof spec.remote === 'number') {
    const declared = ports.filter((p) => p.containerPort === spec.remote)
    if (declared.length > 0 && declared.every((p) => (p.protocol ?? 'TCP') === 'UDP')) {
      throw appError('PFG_ERR_CLI_USAGE', `UDP protocol is not supported for ${spec.remote}`)
    }
    return spec.remote
  }
  const named = ports.find((p) => p.name === spec.remote)
  if (named === undefined) {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `Pod '${podName}' does not have a named port '${spec.remote}'`,
    )
  }
  return named.containerPort
}

/** Runs the command; resolves with the exit code. */
export async function runPortForward(argv: string[], io: CliIo): Promise<number> {
  const err = (line: string): void => {
    io.stderr.write(line.endsWith('\n') ? line : line + '\n')
  }
  let values: Record<string, string | boolean | undefined>
  let positionals: string[]
  try {
    ;({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        namespace: { type: 'string', short: 'n' },
        address: { type: 'string', multiple: false },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        server: { type: 'string', short: 's' },
        token: { type: 'string' },
        'certificate-authority': { type: 'string' },
        'insecure-skip-tls-verify': { type: 'boolean' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (e) {
    err(`error: ${(e as Error).message}`)
    err("See 'pfgate port-forward --help' for usage.")
    return 2
  }
  if (values.help === true) {
    io.stdout.write(PORT_FORWARD_USAGE)
    return 0
  }
  if (positionals.length < 2) {
    err('error: TYPE/NAME and list of ports are required for port-forward')
    err("See 'pfgate port-forward --help' for usage.")
    return 2
  }

  // Arguments: everything is checked before any I/O.
  let podName = positionals[0] as string
  if (podName.startsWith('pod/') || podName.startsWith('pods/'))
    podName = podName.slice(podName.indexOf('/') + 1)
  else if (podName.includes('/')) {
    err(`error: only pods can be forwarded by pfgate; got ${JSON.stringify(positionals[0])}`)
    return 2
  }
  let specs: PortSpec[]
  let addresses: string[]
  try {
    assertObjectName('pod', podName)
    specs = parsePortSpecs(positionals.slice(1))
    addresses = expandAddresses(values.address as string | undefined)
  } catch (e) {
    err(`error: ${(e as Error).message}`)
    return 2
  }

  const overrides: ClientOverrides = {}
  if (typeof values.kubeconfig === 'string') overrides.kubeconfig = values.kubeconfig
  if (typeof values.context === 'string') overrides.context = values.context
  if (typeof values.server === 'string') overrides.server = values.server
  if (typeof values.token === 'string') overrides.token = values.token
  if (typeof values['certificate-authority'] === 'string')
    overrides.certificateAuthority = values['certificate-authority']
  if (values['insecure-skip-tls-verify'] === true) overrides.insecureSkipTlsVerify = true
  if (typeof values.namespace === 'string') overrides.namespace = values.namespace
  let config
  try {
    config = loadClientConfig(overrides, io.env)
    assertNamespace(config.namespace)
  } catch (e) {
    err(`error: ${(e as Error).message}`)
    return 1
  }
  const namespace = config.namespace
  const quiet = values.quiet === true

  setDefaultHighWaterMark(false, STREAM_HIGH_WATER_MARK)
  const client = new GatewayClient({
    config,
    credentials: credentialProvider(config, {
      env: io.env,
      terminal: process.stdin.isTTY,
      stderr: io.stderr,
      warn: err,
    }),
  })
  const listeners: Listener[] = []
  const sockets = new Set<Socket>()
  const relays = new Set<DuplexRelay>()
  let stopping = false

  const shutdown = async (): Promise<void> => {
    stopping = true
    // server.close() waits for open connections, so end those first: every stream is
    // reset (the gateway records it), every local socket closed, then the listeners.
    const closing = listeners.map((l) => closeServer(l.server))
    for (const r of relays) r.abort('shutdown')
    for (const s of sockets) s.destroy()
    client.close()
    await Promise.all(closing)
  }

  // 1. Learn the pod: its node (for the path) and its named ports.
  let pod: PodDoc
  try {
    pod = await client.getJson<PodDoc>(podPath(namespace, podName))
  } catch (e) {
    client.close()
    if (e instanceof GatewayHttpError) {
      if (e.status === 401) err('error: You must be logged in to the server (Unauthorized)')
      else err(`Error from server (${e.kubeStatus?.reason ?? e.status}): ${e.message}`)
    } else {
      err(`error: ${describeError(e)}`)
    }
    return 1
  }
  if (pod.status?.phase !== undefined && pod.status.phase !== 'Running') {
    client.close()
    err(
      `error: unable to forward port because pod is not running. Current status=${pod.status.phase}`,
    )
    return 1
  }
  let nodeName = pod.spec?.nodeName ?? ''
  let remotePorts: number[]
  try {
    remotePorts = specs.map((s) => resolveRemotePort(s, pod, podName))
  } catch (e) {
    client.close()
    err(`error: ${(e as Error).message}`)
    return 1
  }

  // 2. Listen. A random port (`:5000`) is picked on the first address and reused on the others.
  try {
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i] as PortSpec
      const remotePort = remotePorts[i] as number
      let bound: Listener[] = []
      for (let attempt = 0; attempt < 5 && bound.length === 0; attempt++) {
        let port = spec.local
        const errors: string[] = []
        for (const address of addresses) {
          try {
            const server = await listenOn(address, port)
            const a = server.address()
            port = typeof a === 'object' && a !== null ? a.port : port
            bound.push({ server, address, localPort: port, remotePort })
          } catch (e) {
            errors.push(`${formatHostPort(address, port)}: ${describeError(e)}`)
            if (spec.local === 0 && bound.length > 0) break // picked port busy elsewhere: retry
          }
        }
        if (
          spec.local === 0 &&
          bound.length > 0 &&
          bound.length < addresses.length &&
          errors.some((x) => x.includes('EADDRINUSE'))
        ) {
          await Promise.all(bound.map((l) => closeServer(l.server)))
          bound = []
          continue
        }
        if (bound.length === 0) {
          throw appError(
            'PFG_ERR_CLI_LISTEN',
            `unable to listen on any of the requested ports: ${errors.join('; ')}`,
          )
        }
        for (const e of errors) err(`Unable to listen on ${e}`)
      }
      listeners.push(...bound)
    }
  } catch (e) {
    await shutdown()
    err(`error: ${describeError(e)}`)
    return 1
  }

  // 3. Serve.
  const handle = (socket: Socket, l: Listener): void => {
    if (stopping) {
      socket.destroy()
      return
    }
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.on('error', () => {
      // The relay reports it; a reset local client must not crash the CLI.
    })
    if (!quiet) err(`Handling connection for ${l.localPort}`)
    const open = async (retry: boolean): Promise<void> => {
      try {
        const stream = await client.openStream(
          nativePortForwardPath(nodeName, namespace, podName),
          {
            [PORT_HEADER]: String(l.remotePort),
          },
        )
        if (socket.destroyed || stopping) {
          resetStream(stream, RST.CANCEL)
          return
        }
        const relay = new DuplexRelay(socketEndpoint(socket), h2Endpoint(stream, RST.CANCEL), {
          onDone(outcome) {
            relays.delete(relay)
            const f = outcome.failure
            if (f !== undefined && f.side === 'b' && !stopping) {
              const code = stream.rstCode
              err(
                `error: connection for ${l.localPort} -> ${l.remotePort} ended abnormally: ${
                  code !== undefined
                    ? `stream reset (${resetCodeName(code)})`
                    : describeError(f.error ?? f.reason)
                }`,
              )
            }
          },
        })
        relays.add(relay)
      } catch (e) {
        if (e instanceof GatewayHttpError && e.errorCode === 'PFG_ERR_ROUTE_WRONG_NODE' && retry) {
          // The pod moved: learn its new node and try once more.
          try {
            const fresh = await client.getJson<PodDoc>(podPath(namespace, podName))
            nodeName = fresh.spec?.nodeName ?? nodeName
            return await open(false)
          } catch {
            // fall through to the report below
          }
        }
        const what = e instanceof GatewayHttpError ? `${e.message}` : describeError(e)
        err(`an error occurred forwarding ${l.localPort} -> ${l.remotePort}: ${what}`)
        // Only this local connection ends; the listeners keep serving.
        if (!socket.destroyed) socket.destroy()
      }
    }
    void open(true)
  }
  for (const l of listeners) {
    l.server.on('connection', (socket: Socket) => handle(socket, l))
    io.stdout.write(
      `Forwarding from ${formatHostPort(l.address, l.localPort)} -> ${l.remotePort}\n`,
    )
  }
  client.on('disconnected', () => {
    if (!stopping) err('lost connection to the gateway; reconnecting')
  })
  client.on('connected', () => {
    if (!stopping) err('connected to the gateway')
  })

  const signal = await io.stopSignal
  void signal
  await shutdown()
  return 0
}

/** Exit code and message for an unexpected failure. */
export function reportFatal(e: unknown, stderr: Writable): number {
  stderr.write(`error: ${isAppError(e) ? e.message : describeError(e)}\n`)
  return 1
}
