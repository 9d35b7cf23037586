/**
 * Small file-system helpers shared by the file sink and the webhook spool: directory
 * creation that survives a crash (the new entries are fsynced into their parents) and
 * directory fsync (a created, renamed or deleted file is durable only once its directory
 * is).
 *
 * @module
 */
import { mkdir, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { errorCode } from '../../shared/errors.js'

/** fsyncs a directory, so entries created, renamed or removed in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/**
 * Creates `dir` (and missing parents) with mode 0700 and makes the new entries durable.
 * Returns true when something was created.
 */
export async function ensureDir(dir: string): Promise<boolean> {
  const first = await mkdir(dir, { recursive: true, mode: 0o700 })
  if (first === undefined) return false
  // fsync the parent of every directory created, from the top-most one down.
  const chain: string[] = []
  for (let p = dir; ; p = dirname(p)) {
    chain.unshift(p)
    if (p === first || dirname(p) === p) break
  }
  for (const d of chain) await syncDir(dirname(d))
  return true
}

/** `fn()`, ignoring ENOENT (a file that is already gone). */
export async function ignoreMissing(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn()
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err
  }
}
