/**
 * Network-namespace handles and identities for the netns dialer: which path to enter
 * for an operator-written handle, and how the dialer proves a path names the same
 * namespace from one dial to the next (nsfs device and inode).
 *
 * @module
 */
import { stat, statfs } from 'node:fs/promises'
import { appError, errorCode } from '../shared/errors.js'
import type { AppError } from '../shared/errors.js'

/** `statfs` f_type of the namespace filesystem (NSFS_MAGIC in linux/magic.h). */
const NSFS_MAGIC = 0x6e736673
/** Where `ip netns` keeps named namespaces. */
export const NETNS_RUN_DIR = '/run/netns'

const NAME_RE = /^[A-Za-z0-9_.-]{1,255}$/
const ABSOLUTE_RE = /^(?:\/[A-Za-z0-9_.:@+=-]{1,255}){1,64}$/

/** The dialer's error for a namespace it cannot use, in the kubelet's words. */
export function netnsError(path: string, why: string, cause?: unknown): AppError {
  return appError(
    'PFG_ERR_AGENT_NETNS',
    `failed to execute portforward in network namespace ${JSON.stringify(path)}: ${why}`,
    cause === undefined ? undefined : { cause },
  )
}

/**
 * Turns a namespace handle from the agent's config (written by the node's operator)
 * into the path to enter, or throws `PFG_ERR_AGENT_NETNS`: a name under /run/netns
 * (`[A-Za-z0-9_.-]+`, not `.`/`..`), or an absolute path without `.`/`..` segments
 * (`/run/netns/<name>`, `/proc/<pid>/ns/net`, Docker's `/var/run/docker/netns/<id>`…).
 */
export function resolveNetnsHandle(handle: string): string {
  if (typeof handle !== 'string' || handle.length === 0 || handle.length > 4096) {
    throw netnsError(String(handle), 'invalid namespace handle')
  }
  if (handle.split('/').some((s) => s === '.' || s === '..')) {
    throw netnsError(handle, 'invalid namespace handle (relative path segment)')
  }
  if (NAME_RE.test(handle)) return `${NETNS_RUN_DIR}/${handle}`
  if (ABSOLUTE_RE.test(handle)) return handle
  throw netnsError(handle, 'invalid namespace handle')
}

/** A namespace's identity: the nsfs device and inode (what `stat -L` shows). */
export interface NsIdentity {
  dev: number
  ino: number
}

/** True when both name the same namespace. */
export const sameIdentity = (a: NsIdentity, b: NsIdentity): boolean =>
  a.dev === b.dev && a.ino === b.ino

/** stat()s a namespace path; a missing path is a deleted namespace. */
export async function readIdentity(path: string): Promise<NsIdentity> {
  try {
    const st = await stat(path)
    return { dev: st.dev, ino: st.ino }
  } catch (err) {
    const code = errorCode(err)
    throw netnsError(
      path,
      code === 'ENOENT'
        ? 'the namespace does not exist (deleted?)'
        : `cannot stat it (${code ?? 'error'})`,
      err,
    )
  }
}

/** Checks that a path is a namespace file (nsfs); the helper later proves it is a net one. */
export async function assertNsfs(path: string): Promise<void> {
  let type: number
  try {
    type = Number((await statfs(path)).type)
  } catch (err) {
    throw netnsError(path, `cannot statfs it (${errorCode(err) ?? 'error'})`, err)
  }
  if (type !== NSFS_MAGIC) throw netnsError(path, 'not a namespace file')
}
