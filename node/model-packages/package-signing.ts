import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto'
import { CaError, verifyNodeCertificate, type NodeCertificate, type ParsedCrl } from '../../ca/index.ts'
import {
  PackageError, SIGNATURE_ALGORITHM, signedBytes, type Envelope, type Manifest, type PackageErrorCode
} from '../../protocols/model-package.ts'
import semver from 'semver'

export interface PublisherIdentity {
  certPem: string
  /** the X.509 private key that belongs to the certificate (node-x509.key) */
  keyPem: string
}

/** Signs a manifest as the publisher; refuses unless the certificate carries the `publisher` role. */
export function signManifest (manifest: Manifest, publisher: PublisherIdentity, cert: NodeCertificate): Envelope {
  if (!cert.roles.includes('publisher')) {
    throw new PackageError('publisher_not_publisher', `certificate of ${cert.name} lacks the publisher role; the operator must sign it with --roles …,publisher`)
  }
  const value = sign('sha256', signedBytes(manifest), createPrivateKey(publisher.keyPem)).toString('base64')
  return { format: 'bkg-package/1', manifest, signature: { alg: SIGNATURE_ALGORITHM, value }, publisher: publisher.certPem }
}

export interface VerifyOptions {
  caPem: string
  crl?: ParsedCrl | null
  now?: Date
  /** newest version of this model name already accepted here, for the rollback check */
  latestVersion?: string | null
}

const CA_TO_PACKAGE: Partial<Record<string, PackageErrorCode>> = {
  cert_revoked: 'publisher_revoked',
  cert_expired: 'publisher_expired',
  cert_not_yet_valid: 'publisher_not_yet_valid'
}

/**
 * The publisher certificate as nodes judge it: chained to the operator CA, current, not on `crl`.
 * Throws the PackageError a node refuses the package with (publisher_unknown, publisher_expired,
 * publisher_not_yet_valid, publisher_revoked); `bkg model pack` runs it too, before signing.
 */
export function checkPublisherCertificate (certPem: string, options: Pick<VerifyOptions, 'caPem' | 'crl' | 'now'>): NodeCertificate {
  try {
    return verifyNodeCertificate(certPem, { caPem: options.caPem, crl: options.crl ?? null, now: options.now ?? new Date() })
  } catch (err) {
    if (!(err instanceof CaError)) throw err
    throw new PackageError(CA_TO_PACKAGE[err.code] ?? 'publisher_unknown', `publisher certificate refused: ${err.message}`)
  }
}

/**
 * Accepts a package envelope only if its publisher certificate chains to the operator CA, is
 * current, not revoked and has the publisher role, names the same publisher as the manifest, the
 * signature verifies, and the version is not older than one already accepted.
 */
export function verifyEnvelope (envelope: Envelope, options: VerifyOptions): { manifest: Manifest, publisher: NodeCertificate } {
  const cert = checkPublisherCertificate(envelope.publisher, options)
  if (!cert.roles.includes('publisher')) {
    throw new PackageError('publisher_not_publisher', `${cert.name} (${cert.peerId}) has no publisher role`)
  }
  const { manifest } = envelope
  if (manifest.publisher.peerId !== cert.peerId || manifest.publisher.serial !== cert.serial) {
    throw new PackageError('publisher_mismatch', 'the manifest names a different publisher than the certificate that signed it')
  }
  let valid = false
  try {
    valid = verify('sha256', signedBytes(manifest), createPublicKey(envelope.publisher), Buffer.from(envelope.signature.value, 'base64'))
  } catch {
    // a key or signature that does not even parse is refused as an invalid signature, just below
    valid = false
  }
  if (!valid) throw new PackageError('signature_invalid', 'the manifest signature does not verify with the publisher certificate')
  if (options.latestVersion != null && semver.lt(manifest.version, options.latestVersion)) {
    throw new PackageError('version_rollback', `${manifest.name}@${manifest.version} is older than ${manifest.name}@${options.latestVersion}, already accepted here`)
  }
  return { manifest, publisher: cert }
}
