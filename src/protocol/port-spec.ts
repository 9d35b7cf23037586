/**
 * The port forms `oc port-forward` / `kubectl port-forward` accept:
 * `5000`, `8888:5000`, `:5000`, `0:5000` (the last two pick a free local port).
 * Named remote ports (`8080:http`) are kept as names for the caller to resolve.
 * pfgate adds a protocol suffix: `5353:53/udp` forwards UDP (`/tcp`, the default, may be
 * written too).
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import { parsePortNumber } from './names.js'

/** One parsed `[LOCAL:]REMOTE` argument. `local` 0 means "pick a free port". */
export interface PortSpec {
  /** Local port; 0 = choose a free one. */
  local: number
  /** Remote port number, or a container port name to resolve from the pod. */
  remote: number | string
  /** The argument as given. */
  raw: string
  /** `udp` when the argument ends in `/udp`; else `tcp`. */
  protocol: 'tcp' | 'udp'
  /**
   * A bare port name (`http`): the local port is the number the name resolves to, as
   * kubectl does (`local` is 0 until then).
   */
  localFromRemote?: true
}

const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/

/** Parses one port argument; throws `PFG_ERR_CLI_USAGE` with the reason. */
export function parsePortSpec(raw: string): PortSpec {
  const suffix = /\/(tcp|udp)$/.exec(raw)
  const protocol = suffix?.[1] === 'udp' ? 'udp' : 'tcp'
  const body = suffix === null ? raw : raw.slice(0, -suffix[0].length)
  const parts = body.split(':')
  if (parts.length > 2) {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `invalid port format ${JSON.stringify(raw)}: expected [LOCAL:]REMOTE`,
    )
  }
  const remoteText = parts.length === 2 ? (parts[1] as string) : (parts[0] as string)
  const localText = parts.length === 2 ? (parts[0] as string) : remoteText

  let remote: number | string
  const remoteNum = parsePortNumber(remoteText)
  if (remoteNum !== undefined) {
    remote = remoteNum
  } else if (/^[0-9]+$/.test(remoteText) || remoteText.startsWith('-') || remoteText === '') {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `invalid port ${JSON.stringify(raw)}: remote port must be 1..65535`,
    )
  } else if (PORT_NAME.test(remoteText) && remoteText.length <= 15) {
    remote = remoteText
  } else {
    throw appError(
      'PFG_ERR_CLI_USAGE',
      `invalid port ${JSON.stringify(raw)}: remote port must be 1..65535 or a port name`,
    )
  }

  let local: number
  if (parts.length === 2 && (localText === '' || localText === '0')) {
    local = 0
  } else if (parts.length === 1 && typeof remote === 'string') {
    return { local: 0, remote, raw, protocol, localFromRemote: true }
  } else {
    const n =
      typeof remote === 'string' && parts.length === 1 ? undefined : parsePortNumber(localText)
    if (n === undefined) {
      throw appError(
        'PFG_ERR_CLI_USAGE',
        `invalid port ${JSON.stringify(raw)}: local port must be 1..65535, or empty/0 to pick one`,
      )
    }
    local = n
  }
  return { local, remote, raw, protocol }
}

/** Parses every port argument; at least one is required. */
export function parsePortSpecs(args: readonly string[]): PortSpec[] {
  if (args.length === 0) {
    throw appError('PFG_ERR_CLI_USAGE', 'at least one port is required: [LOCAL:]REMOTE')
  }
  return args.map(parsePortSpec)
}
