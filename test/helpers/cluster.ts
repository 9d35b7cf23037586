/**
 * Test helpers: a real dev cluster (processes, TLS, sockets) in a temp directory.
 */
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startDevCluster } from '../../src/dev/cluster.js'
import type { DevCluster } from '../../src/dev/cluster.js'

/** Options for {@link startTestCluster}. */
export interface TestClusterOptions {
  /**
   * Append every component's log (JSON lines on stderr) to this file, at `logLevel`
   * (default `info`), e.g. to check what the logs say, or that secrets never appear there.
   */
  logFile?: string
  logLevel?: string
  /** Run the demo pods in network namespaces (needs root and iproute2). */
  netns?: boolean
  /** Run the demo pods as containerd pods, one containerd per node (needs root and containerd). */
  runtime?: 'containerd'
}

/** Starts a dev cluster on free ports in a fresh temp dir. */
export async function startTestCluster(
  gatewayOverrides: Record<string, unknown> = {},
  options: TestClusterOptions = {},
): Promise<DevCluster & { cleanup(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-test-'))
  const envLevel = process.env.PFGATE_TEST_LOG_LEVEL
  const logFd = options.logFile !== undefined ? openSync(options.logFile, 'a', 0o600) : undefined
  let cluster: DevCluster
  try {
    cluster = await startDevCluster({
      dir,
      port: 0,
      host: '127.0.0.1',
      logLevel: options.logLevel ?? (logFd !== undefined ? 'info' : (envLevel ?? 'error')),
      childStderr: logFd ?? (envLevel !== undefined ? 'inherit' : 'ignore'),
      gatewayOverrides,
      ...(options.netns === true ? { netns: true } : {}),
      ...(options.runtime !== undefined ? { runtime: options.runtime } : {}),
    })
  } catch (err) {
    if (logFd !== undefined) closeSync(logFd)
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  return Object.assign(cluster, {
    async cleanup() {
      await cluster.stop()
      if (logFd !== undefined) closeSync(logFd)
      rmSync(dir, { recursive: true, force: true })
    },
  })
}
