/**
 * Client certificates as user identities, as kube-apiserver's `--client-ca-file` makes
 * them: the subject's common name is the user, each organization a group. The TLS
 * handshake verifies the chain against the configured client CA (the gateway asks for a
 * certificate and accepts connections without one: token clients present none); this
 * source then takes only a certificate that TLS verified and that is meant for clients —
 * with the clientAuth extended key usage, as kube-apiserver requires (a server
 * certificate from the same CA is refused).
 *
 * @module
 */
import type { PeerCertificate } from 'node:tls'
import { AUTHENTICATED_GROUP, MAX_GROUPS, plainName } from './authenticator.js'
import type { CertificateIdentitySource, Identity } from './authenticator.js'

/** id-kp-clientAuth (RFC 5280 §4.2.1.12). */
export const CLIENT_AUTH_EKU = '1.3.6.1.5.5.7.3.2'
/** anyExtendedKeyUsage. */
const ANY_EKU = '2.5.29.37.0'

/** Options of {@link X509Source}. */
export interface X509SourceOptions {
  /** Prepended to the common name (kube-apiserver has none; some deployments want `x509:`). */
  usernamePrefix: string
  groupsPrefix: string
}

/** The x509 identity source. */
export class X509Source implements CertificateIdentitySource {
  readonly name = 'x509'
  readonly #o: X509SourceOptions

  constructor(options: X509SourceOptions) {
    this.#o = options
  }

  /**
   * The identity of a certificate that TLS verified against the client CA (callers pass
   * only those: `socket.authorized`), or why it names none.
   */
  authenticate(cert: PeerCertificate): Identity | string {
    // A certificate without the extension may be used for anything (RFC 5280); Go's
    // x509.Verify with ExtKeyUsageClientAuth, as kube-apiserver calls it, accepts it too.
    const eku = cert.ext_key_usage
    if (eku !== undefined && !eku.includes(CLIENT_AUTH_EKU) && !eku.includes(ANY_EKU)) {
      return 'not valid for client authentication (no clientAuth extended key usage)'
    }
    const cn = first(cert.subject?.CN)
    if (cn === undefined || cn === '') return 'no common name'
    const user = this.#o.usernamePrefix + cn
    if (!plainName(user)) return 'the common name has control characters or is too long'
    const orgs = all(cert.subject?.O)
    if (orgs.length > MAX_GROUPS) return 'too many organizations'
    const groups = orgs.filter((o) => o !== '').map((o) => this.#o.groupsPrefix + o)
    if (!groups.every(plainName)) return 'an organization has control characters or is too long'
    groups.push(AUTHENTICATED_GROUP)
    const until = Date.parse(cert.valid_to)
    return {
      user,
      groups,
      expiresAt: Number.isNaN(until) ? Date.now() : until,
      source: 'x509',
    }
  }
}

function all(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v]
}

function first(v: string | string[] | undefined): string | undefined {
  return all(v)[0]
}
