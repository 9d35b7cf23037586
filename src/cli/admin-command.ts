/**
 * `pfgate admin streams|sessions|agents|kill`: the admin API from the command line. The
 * replica it reaches gathers every replica's answer (docs/scaling.md); the GATEWAY column
 * says which replica holds each stream, session or agent connection.
 *
 * @module
 */
import type { Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import { describeError } from '../shared/errors.js'
import { plainText } from '../shared/text.js'
import { GatewayClient, GatewayHttpError } from './gateway-client.js'
import { CONNECTION_FLAGS, loadClientConfig, overridesFromFlags } from './kubeconfig.js'
import { credentialProvider } from './credentials/index.js'

const USAGE = `usage:
  pfgate admin streams  [-o table|json]     live streams with their byte counts
  pfgate admin sessions [-o table|json]     live client sessions
  pfgate admin agents   [-o table|json]     agents connected to each replica (reverse mode)
  pfgate admin kill stream ID               end one stream (the client sees a reset)
  pfgate admin kill session ID              end a whole client session
Connection flags as for port-forward: --kubeconfig, --context, -s/--server, --token,
--certificate-authority, --insecure-skip-tls-verify. Requires the admin role.
`

/** The widest a cell gets (longer text is cut, with a mark). */
const MAX_CELL = 200

/**
 * Aligned columns. Every cell is escaped (control, invisible and direction-changing
 * characters) and cut short: a user name or a user agent must not forge a row or hide
 * the rest of a line on the admin's terminal.
 */
function table(cells: string[][]): string {
  const rows = cells.map((r) => r.map((c) => plainText(c, MAX_CELL)))
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? []
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  )
}

/** Runs the command. */
export async function runAdminCommand(
  argv: string[],
  io: { stdout: Writable; stderr: Writable; env: NodeJS.ProcessEnv },
): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        output: { type: 'string', short: 'o', default: 'table' },
        ...CONNECTION_FLAGS,
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (e) {
    io.stderr.write(`error: ${(e as Error).message}\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  const [what, kind, id] = positionals
  if (values.help === true) {
    io.stdout.write(USAGE)
    return 0
  }
  const valid =
    ((what === 'streams' || what === 'sessions' || what === 'agents') && kind === undefined) ||
    (what === 'kill' && (kind === 'stream' || kind === 'session') && id !== undefined)
  if (!valid || (values.output !== 'table' && values.output !== 'json')) {
    io.stderr.write(USAGE)
    return 2
  }
  const overrides = overridesFromFlags(values)
  let client: GatewayClient | undefined
  try {
    const config = loadClientConfig(overrides, io.env)
    client = new GatewayClient({
      config,
      credentials: credentialProvider(config, {
        env: io.env,
        terminal: process.stdin.isTTY,
        stderr: io.stderr,
        warn: (m) => io.stderr.write(`${m}\n`),
      }),
    })
    if (what === 'kill') {
      const path = `/admin/v1/${kind === 'stream' ? 'streams' : 'sessions'}/${encodeURIComponent(id as string)}`
      await client.request('DELETE', path)
      io.stdout.write(`${kind} ${id} ended\n`)
      return 0
    }
    const doc = await client.getJson<{
      items: Record<string, unknown>[]
      replicas?: { gateway: string; peer?: string; error?: string }[]
    }>(`/admin/v1/${what}`)
    // A replica that did not answer is said, never silently missing from the list.
    for (const r of doc.replicas ?? []) {
      if (r.error !== undefined)
        io.stderr.write(
          `warning: replica ${plainText(r.peer ?? r.gateway, MAX_CELL)} did not answer: ${plainText(r.error, MAX_CELL)}\n`,
        )
    }
    if (values.output === 'json') {
      io.stdout.write(JSON.stringify(doc.items, null, 2) + '\n')
      return 0
    }
    const gw = (x: Record<string, unknown>): string =>
      typeof x.gateway === 'string' && x.gateway !== '' ? x.gateway.slice(0, 8) : '-'
    if (what === 'agents') {
      // One row per node: the replicas its agent is connected to.
      const byNode = new Map<string, Record<string, unknown>[]>()
      for (const a of doc.items) {
        const node = String(a.node)
        byNode.set(node, [...(byNode.get(node) ?? []), a])
      }
      const answered = (doc.replicas ?? []).filter((r) => r.error === undefined).length
      io.stdout.write(
        table([
          ['NODE', 'REPLICAS', 'GATEWAYS', 'SINCE'],
          ...[...byNode.entries()]
            .sort(([a], [b]) => a.localeCompare(b))
            .map(([node, links]) => [
              node,
              `${links.length}/${answered}`,
              links.map(gw).join(','),
              links.map((l) => String(l.connectedAt)).sort()[0] ?? '-',
            ]),
        ]),
      )
      return 0
    }
    const rows =
      what === 'streams'
        ? [
            [
              'ID',
              'SESSION',
              'USER',
              'TARGET',
              'NODE',
              'PROTOCOL',
              'SINCE',
              'BYTES-UP',
              'BYTES-DOWN',
              'GATEWAY',
            ],
            ...doc.items.map((s) => [
              String(s.id),
              String(s.sessionId),
              String(s.user),
              `${String(s.namespace)}/${String(s.pod)}:${String(s.port)}${s.transport === 'udp' ? '/udp' : ''}`,
              String(s.node),
              String(s.protocol),
              String(s.openedAt),
              String(s.bytesClientToPod),
              String(s.bytesPodToClient),
              gw(s),
            ]),
          ]
        : [
            [
              'ID',
              'USERS',
              'SOURCE',
              'PROTOCOL',
              'SINCE',
              'STREAMS',
              'BYTES-UP',
              'BYTES-DOWN',
              'GATEWAY',
            ],
            ...doc.items.map((s) => [
              String(s.id),
              Array.isArray(s.users) && s.users.length > 0
                ? s.users.map(String).join(',')
                : typeof s.user === 'string'
                  ? s.user
                  : '-',
              String(s.sourceAddress),
              String(s.protocol),
              String(s.openedAt),
              String(s.streams),
              String(s.bytesClientToPod),
              String(s.bytesPodToClient),
              gw(s),
            ]),
          ]
    io.stdout.write(table(rows))
    return 0
  } catch (e) {
    if (e instanceof GatewayHttpError)
      io.stderr.write(`Error from server (${e.kubeStatus?.reason ?? e.status}): ${e.message}\n`)
    else io.stderr.write(`error: ${describeError(e)}\n`)
    return 1
  } finally {
    client?.close()
  }
}
