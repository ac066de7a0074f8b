/**
 * Node certificates: parsing into a plain description, and the full check a
 * node runs on every peer's certificate.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { ParsedCrl } from './parsed-crl.ts'
import { CaError, describeError } from './errors.ts'
import { OID_NAMESPACES, OID_ROLES, PEER_URI_PREFIX } from './oids.ts'
import { isRole, NAMESPACE_PATTERN, type Role } from './roles.ts'
import { ipAddressText } from './san.ts'
import { splitSigned, verifySigned, type SignedParts } from './signed.ts'
import {
  certificateNames, commonNameOf, derToPem, forge, forgeAsn1FromDer, forgeOid, normalizeSerial,
  parseUtf8ListExtension, pemToDer, toBuffer
} from './x509.ts'

export interface NodeCertificate {
  /** lowercase hex, leading zero octets stripped */
  serial: string
  peerId: string
  name: string
  roles: Role[]
  namespaces: string[]
  /** DNS names and IP addresses signed in for the node's HTTPS API (subject alternative names) */
  dnsNames: string[]
  ipAddresses: string[]
  notBefore: Date
  notAfter: Date
  /** issuer common name */
  issuer: string
  /** the certificate re-armoured as a single PEM block */
  pem: string
  /** sha256 of the DER, lowercase hex */
  fingerprint: string
}

export interface VerifyNodeCertificateOptions {
  /** the operator CA certificate (trust anchor) */
  caPem: string
  /** an already verified CRL (see verifyCrl) */
  crl?: ParsedCrl | null
  now?: Date
  /** the PeerId the certificate must name (the authenticated remote peer) */
  expectedPeerId?: string
}

interface Extension {
  id: string
  name?: string
  critical?: boolean
  value: string
  cA?: boolean
  altNames?: Array<{ type: number, value: string }>
  subjectKeyIdentifier?: string
}

interface DecodedCertificate {
  cert: forge.pki.Certificate
  der: Buffer
  signed: SignedParts
  issuerDer: Uint8Array
  subjectDer: Uint8Array
}

function decodeCertificate (pem: string, what: string): DecodedCertificate {
  try {
    const der = pemToDer(pem, ['CERTIFICATE'])
    const signed = splitSigned(der)
    const { signature, issuer, subject } = certificateNames(der)
    // RFC 5280 4.1.1.2: the two AlgorithmIdentifiers must be identical
    if (!Buffer.from(signature).equals(Buffer.from(signed.algorithm))) {
      throw new Error('the signature algorithms inside and outside the TBSCertificate differ')
    }
    const cert = forge.pki.certificateFromAsn1(forgeAsn1FromDer(der), true)
    return { cert, der, signed, issuerDer: issuer, subjectDer: subject }
  } catch (err) {
    throw new CaError('cert_malformed', `malformed ${what}: ${describeError(err)}`, { cause: err })
  }
}

function extensionsOf (cert: forge.pki.Certificate): Extension[] {
  return cert.extensions as Extension[]
}

function isCaCertificate (cert: forge.pki.Certificate): boolean {
  const bc = extensionsOf(cert).find(e => e.name === 'basicConstraints')
  return bc?.cA === true
}

/** The PeerId named by the certificate's URI SAN, or null when there is none. */
function peerIdOf (cert: forge.pki.Certificate): string | null {
  const found: string[] = []
  for (const ext of extensionsOf(cert)) {
    if (ext.name !== 'subjectAltName' || !Array.isArray(ext.altNames)) continue
    for (const alt of ext.altNames) {
      if (alt.type === 6 && typeof alt.value === 'string' && alt.value.startsWith(PEER_URI_PREFIX)) {
        found.push(alt.value.slice(PEER_URI_PREFIX.length))
      }
    }
  }
  if (found.length === 0) return null
  if (found.length > 1) throw new CaError('cert_malformed', 'the certificate names more than one PeerId')
  const peerId = found[0]
  let canonical: string
  try {
    canonical = peerIdFromString(peerId).toString()
  } catch (err) {
    throw new CaError('cert_malformed', `the certificate's PeerId ${JSON.stringify(peerId)} is invalid: ${describeError(err)}`)
  }
  if (canonical !== peerId) throw new CaError('cert_malformed', 'the certificate PeerId is not in canonical form')
  return peerId
}

/** The dNSName and iPAddress SANs (the PeerId URI is read by peerIdOf). */
function hostNamesOf (cert: forge.pki.Certificate): { dnsNames: string[], ipAddresses: string[] } {
  const dnsNames: string[] = []
  const ipAddresses: string[] = []
  for (const ext of extensionsOf(cert)) {
    if (ext.name !== 'subjectAltName' || !Array.isArray(ext.altNames)) continue
    for (const alt of ext.altNames) {
      if (typeof alt.value !== 'string') continue
      if (alt.type === 2) dnsNames.push(alt.value)
      if (alt.type === 7) {
        const text = ipAddressText(toBuffer(alt.value))
        if (text !== null) ipAddresses.push(text)
      }
    }
  }
  return { dnsNames, ipAddresses }
}

function listExtension (cert: forge.pki.Certificate, oid: string, what: string): string[] {
  const ext = extensionsOf(cert).find(e => e.id === forgeOid(oid))
  if (ext === undefined) return []
  try {
    return parseUtf8ListExtension(ext.value)
  } catch (err) {
    throw new CaError('cert_malformed', `malformed ${what} extension: ${describeError(err)}`)
  }
}

function describe (decoded: DecodedCertificate, peerId: string): NodeCertificate {
  const { cert, der } = decoded
  const serial = normalizeSerial(cert.serialNumber)
  if (serial === null) throw new CaError('cert_malformed', 'the certificate has an invalid serial number')
  // unknown roles and invalid namespaces are dropped rather than refused: a
  // newer CA may know more roles, and dropping only ever grants less
  const roles = listExtension(cert, OID_ROLES, 'roles').filter(isRole)
  const namespaces = listExtension(cert, OID_NAMESPACES, 'namespaces').filter(ns => NAMESPACE_PATTERN.test(ns))
  return {
    serial,
    peerId,
    name: commonNameOf(cert.subject),
    roles: [...new Set(roles)],
    namespaces: [...new Set(namespaces)],
    ...hostNamesOf(cert),
    notBefore: new Date(cert.validity.notBefore.getTime()),
    notAfter: new Date(cert.validity.notAfter.getTime()),
    issuer: commonNameOf(cert.issuer),
    pem: derToPem(der, 'CERTIFICATE'),
    fingerprint: createHash('sha256').update(der).digest('hex')
  }
}

/** Parses a node certificate without checking who signed it. Throws CaError('cert_malformed'). */
export function parseNodeCertificate (pem: string): NodeCertificate {
  const decoded = decodeCertificate(pem, 'certificate')
  const peerId = peerIdOf(decoded.cert)
  if (peerId === null) {
    throw new CaError('cert_malformed', `the certificate names no PeerId (no ${PEER_URI_PREFIX}<PeerId> URI SAN)`)
  }
  return describe(decoded, peerId)
}

/** A parsed trust anchor, cached per PEM string. */
export interface TrustedCa {
  cert: forge.pki.Certificate
  der: Buffer
  /** DER of the CA subject Name */
  subjectDer: Uint8Array
  publicKey: KeyObject
  /** subjectKeyIdentifier as lowercase hex, or null */
  keyIdentifier: string | null
  name: string
}

const CA_CACHE_LIMIT = 32
const caCache = new Map<string, TrustedCa>()

/** Parses (once per distinct PEM) the operator CA certificate. Throws CaError('cert_malformed'). */
export function loadTrustedCa (caPem: string): TrustedCa {
  const cached = caCache.get(caPem)
  if (cached !== undefined) return cached
  const decoded = decodeCertificate(caPem, 'CA certificate')
  if (!isCaCertificate(decoded.cert)) {
    throw new CaError('cert_malformed', 'the trust anchor is not a CA certificate (basicConstraints cA is not set)')
  }
  const ski = extensionsOf(decoded.cert).find(e => e.name === 'subjectKeyIdentifier')
  let publicKey: KeyObject
  try {
    publicKey = createPublicKey(forge.pki.publicKeyToPem(decoded.cert.publicKey))
  } catch (err) {
    throw new CaError('cert_malformed', `unusable CA public key: ${describeError(err)}`)
  }
  const ca: TrustedCa = {
    cert: decoded.cert,
    der: decoded.der,
    subjectDer: decoded.subjectDer,
    publicKey,
    keyIdentifier: typeof ski?.subjectKeyIdentifier === 'string' ? ski.subjectKeyIdentifier.toLowerCase() : null,
    name: commonNameOf(decoded.cert.subject)
  }
  if (caCache.size >= CA_CACHE_LIMIT) {
    const oldest = caCache.keys().next().value
    if (oldest !== undefined) caCache.delete(oldest)
  }
  caCache.set(caPem, ca)
  return ca
}

function signedBy (ca: TrustedCa, decoded: DecodedCertificate): boolean {
  if (!Buffer.from(decoded.issuerDer).equals(Buffer.from(ca.subjectDer))) return false
  return verifySigned(decoded.signed, ca.publicKey)
}

/**
 * The full admission check of a node certificate, in order: well formed,
 * issued and signed by the CA, not a CA certificate, names a PeerId, within
 * its validity window, not revoked by `crl`, and names `expectedPeerId`.
 * Throws CaError with the first failing check's code.
 */
export function verifyNodeCertificate (pem: string, options: VerifyNodeCertificateOptions): NodeCertificate {
  const ca = loadTrustedCa(options.caPem)
  const decoded = decodeCertificate(pem, 'certificate')

  if (!signedBy(ca, decoded)) {
    throw new CaError('cert_untrusted', `the certificate was not issued by the operator CA ${JSON.stringify(ca.name)} ` +
      `(issuer ${JSON.stringify(commonNameOf(decoded.cert.issuer))})`)
  }
  if (isCaCertificate(decoded.cert)) {
    throw new CaError('cert_is_ca', 'a CA certificate cannot be used as a node certificate')
  }
  const peerId = peerIdOf(decoded.cert)
  if (peerId === null) {
    throw new CaError('cert_malformed', `the certificate names no PeerId (no ${PEER_URI_PREFIX}<PeerId> URI SAN)`)
  }
  const cert = describe(decoded, peerId)

  const now = options.now ?? new Date()
  if (now.getTime() < cert.notBefore.getTime()) {
    throw new CaError('cert_not_yet_valid', `the certificate is not valid before ${cert.notBefore.toISOString()}`)
  }
  if (now.getTime() > cert.notAfter.getTime()) {
    throw new CaError('cert_expired', `the certificate expired at ${cert.notAfter.toISOString()}`)
  }
  const revokedAt = options.crl?.revoked.get(cert.serial)
  if (revokedAt !== undefined) {
    throw new CaError('cert_revoked', `the certificate ${cert.serial} was revoked at ${revokedAt.toISOString()}`)
  }
  if (options.expectedPeerId !== undefined && options.expectedPeerId !== cert.peerId) {
    throw new CaError('cert_peer_mismatch',
      `the certificate belongs to ${cert.peerId}, not to the connecting peer ${options.expectedPeerId}`)
  }
  return cert
}
