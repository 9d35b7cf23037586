/**
 * `pfgate dev` (`npm start`): the one-command dev cluster.
 *
 * @module
 */
import { relative } from 'node:path'
import { parseArgs } from 'node:util'
import { startDevCluster } from './cluster.js'

const USAGE = `usage: pfgate dev [--port 8443] [--host 127.0.0.1] [--dir .pfgate] [--log-level warn]
                  [--netns | --runtime containerd]

Starts a local dev cluster: a CA and certificates, a signing key and a kubeconfig
in --dir, two node agents (node-a, node-b), demo pods (default/echo on node-a:
echo on 5000 and 6000; default/web on node-b: HTTP on 8080) and the gateway.
With --netns (root and iproute2 needed), the demo pods run in real network
namespaces and the agents enter them; otherwise they use host ports.
With --runtime containerd (root, and Debian's containerd, runc,
containernetworking-plugins and busybox-static), each node gets its own
containerd, the demo pods are real pods there, and the agents find them over
CRI as on a real node.
Ctrl-C stops everything.
`

/** Entry point. */
export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '8443' },
      host: { type: 'string', default: '127.0.0.1' },
      dir: { type: 'string', default: '.pfgate' },
      'log-level': { type: 'string', default: 'warn' },
      netns: { type: 'boolean', default: false },
      runtime: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help === true) {
    process.stdout.write(USAGE)
    return 0
  }
  const port = Number(values.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`error: invalid --port ${JSON.stringify(values.port)}\n`)
    return 2
  }
  if (values.runtime !== undefined && values.runtime !== 'containerd') {
    process.stderr.write(`error: --runtime ${JSON.stringify(values.runtime)}: only containerd\n`)
    return 2
  }
  const say = (line: string): void => {
    process.stderr.write(`pfgate dev: ${line}\n`)
  }
  say('starting: CA and certificates, demo pods, agents node-a and node-b, gateway ...')
  const cluster = await startDevCluster({
    dir: values.dir,
    port,
    host: values.host,
    logLevel: values['log-level'],
    netns: values.netns ? 'auto' : false,
    ...(values.runtime === 'containerd' ? { runtime: 'containerd' as const } : {}),
    log: say,
  })
  const kc = relative(process.cwd(), cluster.kubeconfig) || cluster.kubeconfig
  process.stdout.write(
    [
      '',
      `pfgate dev cluster is up.`,
      `  gateway     ${cluster.gatewayUrl}` +
        (cluster.metricsPort !== undefined
          ? `   (metrics http://127.0.0.1:${cluster.metricsPort}/metrics)`
          : ''),
      `  agents      node-a 127.0.0.1:${cluster.agentPorts['node-a']}, node-b 127.0.0.1:${cluster.agentPorts['node-b']}`,
      `  pods        default/echo on node-a (echo: 5000, 6000), default/web on node-b (http: 8080)` +
        (cluster.runtimes !== undefined
          ? `\n              as containerd pods (${Object.entries(cluster.runtimes)
              .map(([n, h]) => `${n}: unix://${h.socketPath}`)
              .join(', ')}; netns dialer over CRI)`
          : cluster.podNetns !== undefined
            ? `\n              in network namespaces ${Object.values(cluster.podNetns).join(', ')} (netns dialer)`
            : '\n              on host ports (static dialer)'),
      `  kubeconfig  ${kc}  (user "dev", namespace "default"; a development token)`,
      `  audit       ${relative(process.cwd(), cluster.dir) || cluster.dir}/audit/audit.log`,
      `  console     ${cluster.gatewayUrl}/console/  (admins; log in with the token of the kubeconfig's user "dev")`,
      '',
      'Try, in another terminal:',
      `  KUBECONFIG=${kc} npx pfgate port-forward echo 5000 6000`,
      `  KUBECONFIG=${kc} npx pfgate port-forward web 8080:8080     # then: curl http://127.0.0.1:8080/`,
      `  KUBECONFIG=${kc} kubectl port-forward echo 5000`,
      '',
      'Ctrl-C stops the cluster.',
      '',
    ].join('\n'),
  )
  // The handlers stay while the cluster stops: Ctrl-C of `npm start` may deliver a second
  // signal (npm forwards one), whose default action would kill this supervisor mid-stop.
  let stopping = false
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      if (stopping) say('already stopping (the gateway drains first)')
      stopping = true
      resolve()
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
  say('stopping ...')
  await cluster.stop()
  say('stopped')
  return 0
}
