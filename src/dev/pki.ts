/**
 * Development PKI: a cluster CA and the certificates the gateway and agents use
 * (ECDSA P-256, generated with @peculiar/x509 on Node's WebCrypto). For the dev
 * cluster and tests only; production material comes from the operator's own CA.
 *
 * @module
 */
import 'reflect-metadata'
import { webcrypto, randomBytes, X509Certificate } from 'node:crypto'
import * as x509 from '@peculiar/x509'

// The library types WebCrypto with the DOM `Crypto`; Node's webcrypto is that object.
x509.cryptoProvider.set(webcrypto as never)

type CryptoKey = webcrypto.CryptoKey

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const

/** A PEM certificate with its PEM (PKCS#8) private key. */
export interface CertKeyPair {
  cert: string
  key: string
}

/** What a leaf certificate is for. */
export interface LeafOptions {
  commonName: string
  dnsNames?: string[]
  ipAddresses?: string[]
  uris?: string[]
  serverAuth?: boolean
  clientAuth?: boolean
  /** Validity in days (default 365). */
  days?: number
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64')
  return `-----BEGIN ${label}-----\n${b64.replace(/.{64}/g, '$&\n').replace(/\n$/, '')}\n-----END ${label}-----\n`
}

function serial(): string {
  // Positive 16-byte serial number (top bit cleared).
  const b = randomBytes(16)
  b[0] = (b[0] as number) & 0x7f
  return b.toString('hex')
}

async function exportKey(key: CryptoKey): Promise<string> {
  return toPem(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY')
}

/** Creates a self-signed CA. */
export async function createCa(commonName: string, days = 3650): Promise<CertKeyPair> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + days * 86_400_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  return { cert: cert.toString('pem') + '\n', key: await exportKey(keys.privateKey) }
}

async function importKey(pem: string): Promise<CryptoKey> {
  const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '')
  return webcrypto.subtle.importKey('pkcs8', Buffer.from(b64, 'base64'), ALG, false, ['sign'])
}

/** Issues a leaf certificate signed by `ca`. */
export async function issueCert(ca: CertKeyPair, options: LeafOptions): Promise<CertKeyPair> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])
  const caCert = new x509.X509Certificate(ca.cert)
  const caKey = await importKey(ca.key)
  const now = Date.now()
  const names: x509.JsonGeneralName[] = [
    ...(options.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(options.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
    ...(options.uris ?? []).map((value) => ({ type: 'url' as const, value })),
  ]
  const usages: string[] = []
  if (options.serverAuth !== false) usages.push(x509.ExtendedKeyUsage.serverAuth)
  if (options.clientAuth === true) usages.push(x509.ExtendedKeyUsage.clientAuth)
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(usages, false),
    await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
  ]
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false))
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${options.commonName}`,
    issuer: caCert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (options.days ?? 365) * 86_400_000),
    signingKey: caKey,
    publicKey: keys.publicKey,
    signingAlgorithm: ALG,
    extensions,
  })
  return { cert: cert.toString('pem') + '\n', key: await exportKey(keys.privateKey) }
}

/** Milliseconds until the PEM certificate expires (negative when expired). */
export function certRemainingMs(pem: string): number {
  return new Date(new X509Certificate(pem).validTo).getTime() - Date.now()
}

/** True when `leafPem` was issued by `caPem`. */
export function isIssuedBy(leafPem: string, caPem: string): boolean {
  try {
    return new X509Certificate(leafPem).verify(new X509Certificate(caPem).publicKey)
  } catch {
    return false
  }
}
