/**
 * `pfgate port-forward [-n NS] TYPE/NAME [LOCAL:]REMOTE [...]`: `oc port-forward` /
 * `kubectl port-forward` through the gateway. Listens on 127.0.0.1 and [::1]
 * (or `--address`), prints one `Forwarding from` line per listener on stdout,
 * carries every local connection as a stream of one HTTP/2 connection, and on
 * SIGINT/SIGTERM closes every stream, the connection and the listeners.
 *
 * The steps, each in `port-forward/`: parse the arguments (`args.ts`), resolve the target
 * (`target.ts`), listen (`listen.ts`), serve each connection through a stream dialer
 * (`serve.ts`, `gateway-dialer.ts`). `/udp` specs get local UDP sockets and one flow per
 * local client instead (`udp-forward.ts`, docs/udp.md).
 *
 * @module
 */
import { setDefaultHighWaterMark } from 'node:stream'
import type { Writable } from 'node:stream'
import { STREAM_HIGH_WATER_MARK } from '../protocol/h2-settings.js'
import { assertNamespace } from '../protocol/names.js'
import { describeError, isAppError } from '../shared/errors.js'
import { GatewayClient } from './gateway-client.js'
import type { ClientConfig } from './kubeconfig.js'
import { loadClientConfig } from './kubeconfig.js'
import { credentialProvider } from './credentials/index.js'
import { parsePortForwardArgs, PORT_FORWARD_USAGE } from './port-forward/args.js'
import { GatewayDialer } from './port-forward/gateway-dialer.js'
import { formatHostPort, listenAll } from './port-forward/listen.js'
import { serve } from './port-forward/serve.js'
import { resolveNamedTarget, resolvePodTarget, TargetError } from './port-forward/target.js'
import { defaultUdpIdleMs, listenUdp } from './udp-forward.js'
import type { UdpLocalListener } from './udp-forward.js'

/** Standard streams and signals, injectable for tests. */
export interface CliIo {
  stdout: Writable
  stderr: Writable
  env: NodeJS.ProcessEnv
  /** Resolves when the command should stop (SIGINT/SIGTERM). */
  stopSignal: Promise<string>
}

/** Runs the command; resolves with the exit code. */
export async function runPortForward(argv: string[], io: CliIo): Promise<number> {
  const err = (line: string): void => {
    io.stderr.write(line.endsWith('\n') ? line : line + '\n')
  }
  const parsed = parsePortForwardArgs(argv)
  if (parsed.kind === 'help') {
    io.stdout.write(PORT_FORWARD_USAGE)
    return 0
  }
  if (parsed.kind === 'usage-error') {
    for (const line of parsed.lines) err(line)
    return parsed.exitCode
  }
  const { target, specs, addresses, overrides, quiet, podRunningTimeoutMs, udpIdleMs } =
    parsed.request
  let config: ClientConfig
  try {
    config = loadClientConfig(overrides, io.env)
    assertNamespace(config.namespace)
  } catch (e) {
    err(`error: ${(e as Error).message}`)
    // An invalid namespace is an invalid argument wherever it came from (kubectl: 2).
    return isAppError(e) && e.code === 'PFG_ERR_ROUTE_BAD_NAME' ? 2 : 1
  }
  const namespace = config.namespace

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

  // The target: a pod's node (for the stream path) and its named ports; a service's or
  // workload's object (the gateway picks a pod for every connection).
  let nodeName = ''
  let remotePorts: (number | string)[]
  try {
    if (target.kind === 'pod') {
      const pod = await resolvePodTarget(client, namespace, target.name, specs, podRunningTimeoutMs)
      nodeName = pod.nodeName
      remotePorts = pod.remotePorts
    } else {
      remotePorts = (await resolveNamedTarget(client, namespace, target, specs)).remotePorts
    }
  } catch (e) {
    client.close()
    err(e instanceof TargetError ? e.message : `error: ${describeError(e)}`)
    return 1
  }

  let listeners
  const udpListeners: { l: UdpLocalListener; remotePort: number | string }[] = []
  try {
    // A bare port name (`http`) listens on the number it resolved to, as kubectl.
    const localOf = (s: (typeof specs)[number], remote: number | string): number =>
      s.localFromRemote === true ? (remote as number) : s.local
    const pairs = specs.flatMap((s, i) => {
      const remote = remotePorts[i] as number | string
      return s.protocol === 'tcp' ? [{ local: localOf(s, remote), remote }] : []
    })
    listeners = pairs.length > 0 ? await listenAll(pairs, addresses, err) : []
    for (const [i, s] of specs.entries()) {
      if (s.protocol !== 'udp') continue
      const remote = remotePorts[i] as number | string
      const hosts = addresses.map((a) => a.address)
      for (const l of await listenUdp(localOf(s, remote), hosts, err)) {
        udpListeners.push({ l, remotePort: remote })
      }
    }
  } catch (e) {
    for (const u of udpListeners) u.l.close()
    client.close()
    err(`error: ${isAppError(e) ? e.message : describeError(e)}`)
    return 1
  }

  const dialer = new GatewayDialer(client, namespace, target, nodeName)
  const serving = serve(listeners, dialer, { quiet, log: err })
  for (const l of listeners) {
    io.stdout.write(
      `Forwarding from ${formatHostPort(l.address, l.localPort)} -> ${l.remotePort}\n`,
    )
  }
  let stopping = false
  for (const { l, remotePort } of udpListeners) {
    l.serve({
      remotePort,
      idleTimeoutMs: udpIdleMs ?? defaultUdpIdleMs(remotePort),
      openFlow: () => dialer.openUdpFlow(remotePort),
      report: (line) => {
        if (!stopping) err(line)
      },
      flowOpened: (peer) => {
        if (!quiet) err(`Handling UDP flow from ${peer} for ${l.localPort}`)
      },
    })
    io.stdout.write(
      `Forwarding from ${formatHostPort(l.address, l.localPort)} -> ${remotePort}/udp\n`,
    )
  }
  client.on('disconnected', () => {
    if (!stopping) err('lost connection to the gateway; reconnecting')
  })
  client.on('connected', () => {
    if (!stopping) err('connected to the gateway')
  })

  await io.stopSignal
  stopping = true
  for (const u of udpListeners) u.l.close()
  const stopped = serving.stop()
  client.close()
  await stopped
  return 0
}
