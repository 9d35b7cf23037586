/**
 * Test helpers: a real dev cluster (processes, TLS, sockets) in a temp directory.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startDevCluster } from '../../src/dev/cluster.js'
import type { DevCluster } from '../../src/dev/cluster.js'

/** Starts a dev cluster on free ports in a fresh temp dir. */
export async function startTestCluster(
  gatewayOverrides: Record<string, unknown> = {},
  options: { netns?: boolean } = {},
): Promise<DevCluster & { cleanup(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-test-'))
  const cluster = await startDevCluster({
    dir,
    port: 0,
    host: '127.0.0.1',
    logLevel: process.env.PFGATE_TEST_LOG_LEVEL ?? 'error',
    childStderr: process.env.PFGATE_TEST_LOG_LEVEL !== undefined ? 'inherit' : 'ignore',
    gatewayOverrides,
    ...(options.netns === true ? { netns: true } : {}),
  })
  return Object.assign(cluster, {
    async cleanup() {
      await cluster.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  })
}
