/**
 * Builds a tiny OCI image archive from a static busybox binary, for container
 * runtimes on a machine that cannot reach an image registry (the dev cluster's
 * `--runtime containerd`, the tests). The one image serves as the pod sandbox
 * ("pause") image and as the demo pods' servers (`nc`, `httpd`, `sh`).
 *
 * The layout is the OCI image-layout spec's: `oci-layout`, `index.json`, and blobs
 * under `blobs/sha256/` (an uncompressed layer tar, the image config, the manifest),
 * packed into one tar that `ctr images import` accepts. Tars are made by the
 * system's `tar` (GNU tar, in every Debian), with fixed owners and times.
 *
 * @module
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'

/** Debian's busybox-static installs the static binary here. */
export const BUSYBOX_STATIC = '/bin/busybox'

/** The applets linked in the image's /bin (the commands also work as `busybox <applet>`). */
const APPLETS = ['sh', 'cat', 'nc', 'httpd', 'sleep', 'ip', 'echo', 'mkdir']

/** What {@link buildBusyboxImage} wrote. */
export interface OciImageArchive {
  /** The archive (a tar of the OCI layout). */
  path: string
  /** The name it is imported under, e.g. `docker.io/pfgate/busybox:dev`. */
  ref: string
  /** `sha256:…` of the manifest. */
  manifestDigest: string
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

/** GNU tar of `dir`'s contents with reproducible metadata. */
function tarDir(dir: string, out: string, entries: string[]): void {
  execFileSync(
    'tar',
    [
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      dir,
      '-cf',
      out,
      ...entries,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
}

/** The OCI architecture name of this process's CPU. */
export function ociArchitecture(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', s390x: 's390x' }
  return map[process.arch] ?? process.arch
}

/**
 * Writes `<dir>/image.tar`: an OCI image with `/bin/busybox` (copied from `busybox`,
 * which must be statically linked) and links for a few applets. Its default command
 * sleeps for ever (the sandbox process). `ref` names it on import.
 */
export function buildBusyboxImage(
  dir: string,
  ref: string,
  busybox: string = BUSYBOX_STATIC,
): OciImageArchive {
  const rootfs = join(dir, 'rootfs')
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'www']) {
    mkdirSync(join(rootfs, d), { recursive: true })
  }
  chmodSync(join(rootfs, 'tmp'), 0o1777)
  copyFileSync(busybox, join(rootfs, 'bin', 'busybox'))
  chmodSync(join(rootfs, 'bin', 'busybox'), 0o755)
  for (const a of APPLETS) symlinkSync('busybox', join(rootfs, 'bin', a))
  const layerPath = join(dir, 'layer.tar')
  tarDir(rootfs, layerPath, ['.'])
  const layer = readFileSync(layerPath)
  const layerDigest = sha256(layer)

  const arch = ociArchitecture()
  const config = Buffer.from(
    JSON.stringify({
      architecture: arch,
      os: 'linux',
      config: {
        Env: ['PATH=/bin'],
        Entrypoint: ['/bin/busybox', 'sleep', '2147483647'],
        WorkingDir: '/',
      },
      rootfs: { type: 'layers', diff_ids: [layerDigest] },
    }),
  )
  const configDigest = sha256(config)
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: layerDigest,
          size: layer.length,
        },
      ],
    }),
  )
  const manifestDigest = sha256(manifest)
  const layout = join(dir, 'layout')
  const blobs = join(layout, 'blobs', 'sha256')
  mkdirSync(blobs, { recursive: true })
  const blob = (digest: string): string => join(blobs, digest.slice('sha256:'.length))
  copyFileSync(layerPath, blob(layerDigest))
  writeFileSync(blob(configDigest), config)
  writeFileSync(blob(manifestDigest), manifest)
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  const tag = ref.slice(ref.lastIndexOf(':') + 1)
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: manifest.length,
          platform: { architecture: arch, os: 'linux' },
          annotations: {
            'io.containerd.image.name': ref,
            'org.opencontainers.image.ref.name': tag,
          },
        },
      ],
    }),
  )
  const path = join(dir, 'image.tar')
  tarDir(layout, path, ['oci-layout', 'index.json', 'blobs'])
  return { path, ref, manifestDigest }
}
