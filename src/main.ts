/**
 * The `pfgate` command: dispatches to the component that serves each subcommand.
 * It is the only module that imports several components (each lazily).
 *
 * @module
 */
import { describeError, isAppError } from './shared/errors.js'

const USAGE = `pfgate: an authenticated, audited port-forward gateway for Kubernetes-style clusters.

Usage: pfgate <command> [options]

Client commands:
  port-forward   forward local ports to a pod through the gateway (like kubectl/oc port-forward)
  audit          query or follow the audit trail (audit query | audit follow)
  admin          list live streams and end them (admin streams | admin sessions | admin kill)
  login          log in through an OpenID provider; the exec credential plugin for kubeconfigs

Operator commands:
  gateway        run the gateway (--config FILE)
  agent          run a node agent (--config FILE)
  dev            run a local dev cluster: gateway, two agents, demo pods (npm start)
  token          mint a development token for the dev cluster (development only)
  certs          create development certificates, a signing key and a kubeconfig (development only)
  demo-pod       run a demo pod server (echo or http), used by dev and docker-compose

Run 'pfgate <command> --help' for a command's options.
`

function stopSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string): void => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
      resolve(sig)
    }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
  })
}

/** Every subcommand (docker-compose.yml and the docs are checked against this list). */
export const COMMANDS = [
  'port-forward',
  'audit',
  'admin',
  'login',
  'gateway',
  'agent',
  'dev',
  'token',
  'certs',
  'demo-pod',
  'version',
  'help',
] as const

/** Runs `argv` (without node and the script); resolves with the exit code. */
export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  const io = { stdout: process.stdout, stderr: process.stderr, env: process.env }
  switch (cmd) {
    case 'port-forward': {
      const { runPortForward } = await import('./cli/port-forward.js')
      return runPortForward(rest, { ...io, stopSignal: stopSignal() })
    }
    case 'gateway':
      return (await import('./gateway/main.js')).main(rest)
    case 'agent':
      return (await import('./agent/main.js')).main(rest)
    case 'dev':
      return (await import('./dev/main.js')).main(rest)
    case 'token':
      return (await import('./dev/token.js')).main(rest, io)
    case 'certs':
      return (await import('./dev/certs-command.js')).main(rest, io)
    case 'demo-pod':
      return (await import('./dev/demo-pod.js')).main(rest)
    case 'audit': {
      const { runAuditCommand } = await import('./cli/audit-command.js')
      const ac = new AbortController()
      void stopSignal().then(() => ac.abort())
      return runAuditCommand(rest, { stdout: io.stdout, stderr: io.stderr, signal: ac.signal })
    }
    case 'admin':
      return (await import('./cli/admin-command.js')).runAdminCommand(rest, io)
    case 'login':
      return (await import('./cli/login/command.js')).runLogin(rest, io)
    case 'version':
    case '--version':
      process.stdout.write('pfgate 0.1.0\n')
      return 0
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE)
      return cmd === undefined ? 2 : 0
    default:
      process.stderr.write(`error: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`)
      return 2
  }
}

/** Process entry: exit with the command's code; a thrown error prints one clear line. */
export function main(): void {
  run(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (err: unknown) => {
      process.stderr.write(`error: ${isAppError(err) ? err.message : describeError(err)}\n`)
      process.exitCode = 1
    },
  )
}
