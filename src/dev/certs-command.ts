/**
 * `pfgate certs --dir DIR [--server URL]`: creates (or keeps, while valid) the
 * development PKI, the token signing key and a kubeconfig in DIR, without starting
 * anything. docker-compose.yml runs it once to populate its `certs` volume.
 * DEVELOPMENT ONLY: production certificates come from your own CA.
 *
 * @module
 */
import type { Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import { ensureMaterial, writeKubeconfig } from './cluster.js'
import { mintToken } from './token.js'

/** Entry point. */
export async function main(
  argv: string[],
  io: { stdout: Writable; stderr: Writable },
): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string', default: '.pfgate' },
      server: { type: 'string', default: 'https://localhost:8443' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help === true) {
    io.stdout.write(
      'usage: pfgate certs [--dir .pfgate] [--server https://localhost:8443]\n' +
        'Creates a DEVELOPMENT CA, gateway/agent certificates, a signing key and a kubeconfig.\n',
    )
    return 0
  }
  await ensureMaterial(values.dir)
  const token = await mintToken(values.dir, {
    subject: 'dev',
    groups: ['pfgate:developers', 'pfgate:admins'],
    ttlMs: 30 * 86_400_000,
  })
  const kc = writeKubeconfig(values.dir, values.server, token)
  io.stderr.write(`pfgate certs: development material in ${values.dir}; kubeconfig ${kc}\n`)
  return 0
}
