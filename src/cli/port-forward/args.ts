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
import { assertObjectName } from '../../protocol/names.js'
import { appError } from '../../shared/errors.js'
import { CONNECTION_FLAGS, overridesFromFlags } from '../kubeconfig.js'
import type { ClientOverrides } from '../kubeconfig.js'

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

/** What to forward where (the target's namespace comes with the client config). */
export interface PortForwardRequest {
  /** The target as named on the command line, without its `pod/` prefix. */
  target: { resource: 'pods'; name: string }
  specs: PortSpec[]
  /** Local addresses to listen on, each port on every one. */
  addresses: string[]
  /** Kubeconfig overrides from the flags (the namespace among them). */
  overrides: ClientOverrides
  /** No `Handling connection` lines. */
  quiet: boolean
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

/** Local addresses from `--address` (`localhost` = 127.0.0.1 and ::1), without repeats. */
export function expandAddresses(value: string | undefined): string[] {
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

/** The target argument: `NAME`, `pod/NAME` or `pods/NAME`; other types are refused. */
function parseTarget(arg: string): PortForwardRequest['target'] | undefined {
  if (arg.startsWith('pod/') || arg.startsWith('pods/'))
    return { resource: 'pods', name: arg.slice(arg.indexOf('/') + 1) }
  if (arg.includes('/')) return undefined
  return { resource: 'pods', name: arg }
}

/** Parses the arguments after `port-forward`. */
export function parsePortForwardArgs(argv: string[]): ParsedCommand {
  let values: Record<string, string | boolean | undefined>
  let positionals: string[]
  try {
    ;({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        namespace: { type: 'string', short: 'n' },
        address: { type: 'string', multiple: false },
        ...CONNECTION_FLAGS,
        quiet: { type: 'boolean', short: 'q' },
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
  const target = parseTarget(arg)
  if (target === undefined) {
    return usageError(`error: only pods can be forwarded by pfgate; got ${JSON.stringify(arg)}`)
  }
  try {
    assertObjectName('pod', target.name)
    const specs = parsePortSpecs(positionals.slice(1))
    const addresses = expandAddresses(values.address as string | undefined)
    return {
      kind: 'run',
      request: {
        target,
        specs,
        addresses,
        overrides: overridesFromFlags(values),
        quiet: values.quiet === true,
      },
    }
  } catch (e) {
    return usageError(`error: ${(e as Error).message}`)
  }
}
