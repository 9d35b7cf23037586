/**
 * `pfgate port-forward` step 1, parse: the command line into what to forward, checked
 * before any I/O (exit code 2 on a usage error, as kubectl).
 *
 * @module
 */
import { isIP } from 'node:net'
import { parseArgs } from 'node:util'
import { parsePortSpecs } from '../../protocol/port-spec.js'
import type { PortSpec } from '../../protocol/port-spec.js'
import { assertNamespace, assertObjectName } from '../../protocol/names.js'
import { parseTargetRef } from '../../protocol/targets.js'
import type { TargetRef } from '../../protocol/targets.js'
import { parseDuration } from '../../shared/config.js'
import { appError } from '../../shared/errors.js'
import { CONNECTION_FLAGS, overridesFromFlags } from '../kubeconfig.js'
import type { ClientOverrides } from '../kubeconfig.js'

export const PORT_FORWARD_USAGE = `Forward one or more local ports to a pod, through the pfgate gateway.

Usage:
  pfgate port-forward [-n NAMESPACE] TYPE/NAME [LOCAL_PORT:]REMOTE_PORT [...[LOCAL_PORT_N:]REMOTE_PORT_N]

TYPE/NAME is a pod (NAME, pod/NAME), a service (svc/NAME) or a workload (deploy/NAME,
rs/NAME, sts/NAME). For a service or workload the gateway picks a ready pod for every
new connection, so the forward follows the pods when they are replaced; for a service,
REMOTE_PORT is a service port (number or name), mapped to each pod's target port.

Examples:
  pfgate port-forward echo 5000 6000      # local 5000 and 6000 to the pod's 5000 and 6000
  pfgate port-forward echo 8888:5000      # local 8888 to the pod's 5000
  pfgate port-forward echo :5000          # a free local port to the pod's 5000 (also 0:5000)
  pfgate port-forward pod/web 8080:http   # a named container port
  pfgate port-forward web http            # the same, local port = the container port (8080)
  pfgate port-forward svc/hello 8080:80   # local 8080 to service port 80 of a ready pod, per connection
  pfgate port-forward deploy/hello 8080:http
  pfgate port-forward dns 5353:53/udp     # UDP: local UDP 5353 to the pod's UDP 53

Options:
  -n, --namespace NS              namespace (default: the context's, else "default")
      --address ADDRS             addresses to listen on, comma separated, repeatable: IPs or localhost (default localhost = 127.0.0.1 and ::1)
      --pod-running-timeout D     how long to wait for a Pending pod to run (default 1m)
      --kubeconfig FILE           kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
      --context NAME              kubeconfig context (default: current-context)
  -s, --server URL                gateway URL, overriding the kubeconfig
      --token TOKEN               bearer token, overriding the kubeconfig
      --certificate-authority F   CA bundle for the gateway's certificate
      --insecure-skip-tls-verify  do not verify the gateway's certificate (insecure)
  -q, --quiet                     do not log each connection
      --udp-idle-timeout SECONDS  end a local UDP flow after this long without a datagram (default 10 for port 53, else 60)
  -h, --help                      this help
`

/** What to forward where (the target's namespace comes with the client config). */
export interface PortForwardRequest {
  /** The target as named on the command line (`svc/echo` → service `echo`). */
  target: TargetRef
  specs: PortSpec[]
  /** Local addresses to listen on, each port on every one. */
  addresses: ListenAddress[]
  /** `--pod-running-timeout`, ms. */
  podRunningTimeoutMs: number
  /** Kubeconfig overrides from the flags (the namespace among them). */
  overrides: ClientOverrides
  /** No `Handling connection` lines. */
  quiet: boolean
  /** `--udp-idle-timeout`, ms (default: by remote port, see udp-forward.ts). */
  udpIdleMs?: number
}

/** The parse's verdict: run, print the usage, or fail with these lines and exit code. */
export type ParsedCommand =
  | { kind: 'run'; request: PortForwardRequest }
  | { kind: 'help' }
  | { kind: 'usage-error'; lines: string[]; exitCode: 2 }

const SEE_HELP = "See 'pfgate port-forward --help' for usage."

function usageError(...lines: string[]): ParsedCommand {
  return { kind: 'usage-error', lines, exitCode: 2 }
}

/**
 * An address to listen on, and how its failure counts (kubectl's rule): the two addresses
 * `localhost` stands for may fail one at a time (`all`: the port fails only if all of them
 * do, e.g. no IPv6), an address named explicitly may not (`any`: one failure fails the port).
 */
export interface ListenAddress {
  address: string
  failureMode: 'all' | 'any'
}

/** Local addresses from `--address` (`localhost` = 127.0.0.1 and ::1), without repeats. */
export function expandAddresses(value: string | undefined): ListenAddress[] {
  const parts = (value ?? 'localhost')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  const out = new Map<string, ListenAddress>()
  for (const p of parts) {
    if (p === 'localhost') {
      for (const address of ['127.0.0.1', '::1'])
        if (!out.has(address)) out.set(address, { address, failureMode: 'all' })
    } else if (isIP(p) !== 0) {
      if (!out.has(p)) out.set(p, { address: p, failureMode: 'any' })
    } else
      throw appError(
        'PFG_ERR_CLI_USAGE',
        `invalid --address ${JSON.stringify(p)}: use IP addresses or localhost`,
      )
  }
  return [...out.values()]
}

/** `--pod-running-timeout` (kubectl's default 1m): a duration higher than zero. */
export function parsePodRunningTimeout(value: unknown): number {
  if (value === undefined) return 60_000
  let ms: number
  try {
    ms = parseDuration(value as string, '--pod-running-timeout')
  } catch {
    ms = 0
  }
  if (!(ms > 0)) {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `invalid --pod-running-timeout ${JSON.stringify(value)}: use a duration higher than zero (like 5s, 2m, or 3h)`,
    )
  }
  return ms
}

/** Parses the arguments after `port-forward`. */
export function parsePortForwardArgs(argv: string[]): ParsedCommand {
  let values: Record<string, string | string[] | boolean | undefined>
  let positionals: string[]
  try {
    ;({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        namespace: { type: 'string', short: 'n' },
        address: { type: 'string', multiple: true },
        'pod-running-timeout': { type: 'string' },
        ...CONNECTION_FLAGS,
        quiet: { type: 'boolean', short: 'q' },
        'udp-idle-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (e) {
    return usageError(`error: ${(e as Error).message}`, SEE_HELP)
  }
  if (values.help === true) return { kind: 'help' }
  if (positionals.length < 2) {
    return usageError('error: TYPE/NAME and list of ports are required for port-forward', SEE_HELP)
  }
  const arg = positionals[0] as string
  try {
    const target = parseTargetRef(arg)
    assertObjectName(target.kind, target.name)
    const specs = parsePortSpecs(positionals.slice(1))
    // Repeated --address flags all apply (each may be a comma-separated list).
    const addresses = expandAddresses((values.address as string[] | undefined)?.join(','))
    const podRunningTimeoutMs = parsePodRunningTimeout(values['pod-running-timeout'])
    if (typeof values.namespace === 'string') assertNamespace(values.namespace)
    if (
      target.kind !== 'pod' &&
      target.kind !== 'service' &&
      specs.some((x) => x.localFromRemote)
    ) {
      throw appError(
        'PFG_ERR_CLI_USAGE',
        `a bare port name needs a local port for ${arg}: use LOCAL:NAME`,
      )
    }
    const idle = values['udp-idle-timeout']
    if (typeof idle === 'string' && !/^[0-9]{1,6}$/.test(idle)) {
      throw appError(
        'PFG_ERR_CLI_USAGE',
        `invalid --udp-idle-timeout ${JSON.stringify(idle)}: seconds`,
      )
    }
    return {
      kind: 'run',
      request: {
        target,
        specs,
        addresses,
        podRunningTimeoutMs,
        overrides: overridesFromFlags(values),
        quiet: values.quiet === true,
        ...(typeof idle === 'string' ? { udpIdleMs: Number(idle) * 1000 } : {}),
      },
    }
  } catch (e) {
    return usageError(`error: ${(e as Error).message}`)
  }
}
