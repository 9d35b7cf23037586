/**
 * Where a pod sandbox's network is, from the runtime's own PodSandboxStatus: the
 * network namespace file to enter and the pod's IP addresses.
 *
 * The CRI status has the IPs and the namespace *mode* (POD or NODE) but no path; the
 * path is in the verbose `info` map, whose `"info"` key containerd and CRI-O both fill
 * with a JSON object (the runtime's view of the sandbox). pfgate reads, in order:
 *
 * 1. `runtimeSpec.linux.namespaces[type=network].path`: the OCI spec the sandbox was
 *    started with (containerd: `/var/run/netns/cni-<uuid>`; CRI-O: `/var/run/netns/<uuid>`);
 * 2. `sandboxMetadata.NetNSPath` (containerd 1.7 and later);
 * 3. `/proc/<pid>/ns/net` of the sandbox process `pid`.
 *
 * @module
 */
import { isIP } from 'node:net'
import type { CriPodSandboxStatusResponse } from './client.js'

/** The runtime's answer about a sandbox's network, checked. */
export interface SandboxNetwork {
  /** The sandbox uses the node's network namespace (hostNetwork: true). */
  hostNetwork: boolean
  /** The namespace file to enter; undefined with `hostNetwork`. */
  netnsPath: string | undefined
  /** Where the path came from: `runtimeSpec`, `sandboxMetadata` or `pid`. */
  netnsFrom: 'runtimeSpec' | 'sandboxMetadata' | 'pid' | undefined
  /** The pod's IP addresses as the runtime reports them (validated literals). */
  podIps: string[]
  /**
   * The sandbox process (`info.pid`, its pause process) when the runtime reports one:
   * the agent's cache checks it still lives in the namespace (cri-resolver.ts).
   */
  pid: number | undefined
}

/** Longest `info` JSON parsed (containerd's is a few tens of KiB with the runtime spec). */
const MAX_INFO_CHARS = 4 * 1024 * 1024

const ABSOLUTE_PATH = /^(?:\/[A-Za-z0-9_.:@+=-]{1,255}){1,64}$/

type Json = Record<string, unknown>
const obj = (v: unknown): Json | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined

/** An absolute path without `.`/`..` segments, or undefined. */
function cleanPath(v: unknown): string | undefined {
  if (typeof v !== 'string' || !ABSOLUTE_PATH.test(v)) return undefined
  return v.split('/').some((s) => s === '.' || s === '..') ? undefined : v
}

/**
 * Reads the network of a sandbox from a verbose PodSandboxStatus answer. Throws an
 * `Error` saying what is missing when the runtime gave no usable namespace.
 */
export function sandboxNetwork(resp: CriPodSandboxStatusResponse): SandboxNetwork {
  const status = resp.status
  const podIps: string[] = []
  const addIp = (ip: unknown): void => {
    if (typeof ip === 'string' && isIP(ip) !== 0 && !podIps.includes(ip)) podIps.push(ip)
  }
  addIp(status?.network?.ip)
  for (const extra of status?.network?.additionalIps ?? []) addIp(extra.ip)
  const hostNetwork = status?.linux?.namespaces?.options?.network === 'NODE'
  const text = resp.info.info
  let info: Json | undefined
  if (typeof text === 'string' && text.length <= MAX_INFO_CHARS) {
    try {
      info = obj(JSON.parse(text))
    } catch {
      info = undefined
    }
  }
  const rawPid = info?.pid
  const pid =
    typeof rawPid === 'number' && Number.isInteger(rawPid) && rawPid > 1 && rawPid < 2 ** 31
      ? rawPid
      : undefined
  if (hostNetwork) return { hostNetwork, netnsPath: undefined, netnsFrom: undefined, podIps, pid }
  if (info === undefined) {
    throw new Error('the runtime gave no sandbox info (verbose PodSandboxStatus "info")')
  }
  const namespaces = obj(obj(info.runtimeSpec)?.linux)?.namespaces
  if (Array.isArray(namespaces)) {
    for (const ns of namespaces) {
      const o = obj(ns)
      const path = cleanPath(o?.path)
      if (o?.type === 'network' && path !== undefined) {
        return { hostNetwork, netnsPath: path, netnsFrom: 'runtimeSpec', podIps, pid }
      }
    }
  }
  const metaPath = cleanPath(obj(info.sandboxMetadata)?.NetNSPath)
  if (metaPath !== undefined) {
    return { hostNetwork, netnsPath: metaPath, netnsFrom: 'sandboxMetadata', podIps, pid }
  }
  if (pid !== undefined) {
    return { hostNetwork, netnsPath: `/proc/${pid}/ns/net`, netnsFrom: 'pid', podIps, pid }
  }
  throw new Error('the runtime reported no network namespace for the sandbox')
}
