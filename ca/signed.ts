/**
 * The SIGNED{} envelope shared by certificates, CSRs and CRLs:
 *   SEQUENCE { toBeSigned, AlgorithmIdentifier, BIT STRING signature }
 * Signatures are made and checked with node:crypto over the exact DER bytes
 * of toBeSigned (sliced from the original encoding, never re-encoded).
 */
import { sign as cryptoSign, verify as cryptoVerify, type KeyLike } from 'node:crypto'
import {
  childrenOf, readSingleTlv, TAG_BIT_STRING, TAG_NULL, TAG_OID, TAG_SEQUENCE, tlvBytes, tlvContent, type Tlv
} from './der.ts'
import { OID_SHA256_WITH_RSA } from './oids.ts'
import { decodeOidContent, derToPem, encodeOidContent, forge, forgeAsn1ToDer, forgePkiExtra } from './x509.ts'

const HASH_BY_OID = new Map([
  [OID_SHA256_WITH_RSA, 'sha256'],
  ['1.2.840.113549.1.1.12', 'sha384'],
  ['1.2.840.113549.1.1.13', 'sha512']
])

export interface SignedParts {
  /** the complete DER of toBeSigned */
  tbs: Uint8Array
  tbsTlv: Tlv
  /** the complete DER of the outer AlgorithmIdentifier */
  algorithm: Uint8Array
  algorithmOid: string
  signature: Uint8Array
}

/** Splits a SIGNED{} envelope. Throws a plain Error when malformed. */
export function splitSigned (der: Uint8Array): SignedParts {
  const outer = readSingleTlv(der)
  if (outer.tag !== TAG_SEQUENCE) throw new Error('not a SEQUENCE')
  const parts = childrenOf(der, outer)
  if (parts.length !== 3) throw new Error('a signed object has three parts')
  const [tbsTlv, algTlv, sigTlv] = parts
  if (tbsTlv.tag !== TAG_SEQUENCE) throw new Error('the signed part is not a SEQUENCE')
  if (algTlv.tag !== TAG_SEQUENCE) throw new Error('the signature algorithm is not a SEQUENCE')
  const algParts = childrenOf(der, algTlv)
  if (algParts.length < 1 || algParts.length > 2 || algParts[0].tag !== TAG_OID) {
    throw new Error('malformed signature AlgorithmIdentifier')
  }
  const algorithmOid = decodeOidContent(tlvContent(der, algParts[0]))
  // RSA PKCS#1 v1.5 algorithms take NULL (or absent) parameters: anything else is malleable noise
  if (algParts.length === 2 && (algParts[1].tag !== TAG_NULL || algParts[1].end !== algParts[1].contentStart)) {
    throw new Error('unexpected signature algorithm parameters')
  }
  if (sigTlv.tag !== TAG_BIT_STRING) throw new Error('the signature is not a BIT STRING')
  const sig = tlvContent(der, sigTlv)
  if (sig.length < 2 || sig[0] !== 0) throw new Error('malformed signature BIT STRING')
  return {
    tbs: tlvBytes(der, tbsTlv),
    tbsTlv,
    algorithm: tlvBytes(der, algTlv),
    algorithmOid,
    signature: sig.subarray(1)
  }
}

/** True when `parts` carries a valid RSA PKCS#1 v1.5 SHA-2 signature by `publicKey`. Never throws. */
export function verifySigned (parts: SignedParts, publicKey: KeyLike): boolean {
  const hash = HASH_BY_OID.get(parts.algorithmOid)
  if (hash === undefined) return false
  try {
    return cryptoVerify(hash, parts.tbs, publicKey, parts.signature)
  } catch {
    // a key or signature that does not fit the algorithm: not a valid signature, which callers refuse
    return false
  }
}

/** sha256WithRSAEncryption AlgorithmIdentifier (with the NULL parameters RFC 4055 asks for). */
export function sha256WithRsaAlgorithm (): Buffer {
  const oid = encodeOidContent(OID_SHA256_WITH_RSA)
  const body = Buffer.concat([Buffer.from([TAG_OID, oid.length]), oid, Buffer.from([TAG_NULL, 0])])
  return Buffer.concat([Buffer.from([TAG_SEQUENCE, body.length]), body])
}

function derLength (length: number): Buffer {
  if (length < 0x80) return Buffer.from([length])
  const bytes: number[] = []
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

/** One DER TLV with definite length. */
export function tlv (tag: number, content: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLength(content.length), content])
}

/**
 * Signs DER `tbs` (which must embed sha256WithRsaAlgorithm() as its signature
 * field) with an RSA private key and returns the DER of the signed object.
 */
export function assembleSigned (tbs: Uint8Array, privateKey: KeyLike): Buffer {
  const signature = cryptoSign('sha256', tbs, privateKey)
  const bitString = tlv(TAG_BIT_STRING, Buffer.concat([Buffer.from([0]), signature]))
  return tlv(TAG_SEQUENCE, Buffer.concat([tbs, sha256WithRsaAlgorithm(), bitString]))
}

/** Signs a certificate built with forge (sha256WithRSAEncryption) and returns its PEM. */
export function signForgeCertificate (cert: forge.pki.Certificate, privateKey: KeyLike): string {
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption
  cert.siginfo.parameters = undefined
  const tbs = forgeAsn1ToDer(forgePkiExtra.getTBSCertificate(cert))
  return derToPem(assembleSigned(tbs, privateKey), 'CERTIFICATE')
}

/** Signs a certification request built with forge (sha256WithRSAEncryption) and returns its PEM. */
export function signForgeCsr (csr: forge.pki.CertificateSigningRequest, privateKey: KeyLike): string {
  csr.signatureOid = csr.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption
  const info = forgeAsn1ToDer(forgePkiExtra.getCertificationRequestInfo(csr))
  return derToPem(assembleSigned(info, privateKey), 'CERTIFICATE REQUEST')
}
