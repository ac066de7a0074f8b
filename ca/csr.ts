/**
 * Node certificate signing requests.
 *
 * A node has two keys: its libp2p Ed25519 key (its PeerId) and an RSA key for
 * its X.509 certificate (forge only does RSA). The CSR binds them: it carries
 * the PeerId as a URI SAN `bkg:peer:<PeerId>` and an extension (OID_PEER_KEY_PROOF)
 * holding an Ed25519 signature, by the libp2p key, over
 *   UTF-8("bkg-csr-proof-v1\n" + PeerId + "\n") || DER(SubjectPublicKeyInfo of the RSA key)
 * so the CA only certifies a PeerId for whoever holds its private key.
 */
import { createPublicKey, type KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { childrenOf, readSingleTlv, TAG_OCTET_STRING, TAG_SEQUENCE, tlvBytes } from './der.ts'
import { CaError, describeError } from './errors.ts'
import { CSR_PROOF_CONTEXT, OID_PEER_KEY_PROOF, PEER_URI_PREFIX } from './oids.ts'
import { signForgeCsr, splitSigned, verifySigned, type SignedParts } from './signed.ts'
import {
  commonNameOf, forge, forgeAsn1FromDer, forgeOid, generateRsaKey, nameAttributes, pemToDer, toBinary, toBuffer
} from './x509.ts'

export const MAX_NODE_NAME_LENGTH = 64

export interface CreateNodeCsrOptions {
  /** the node's libp2p key; only Ed25519 keys are accepted */
  privateKey: PrivateKey
  /** the node name, becomes the subject CN (1-64 characters) */
  name: string
}

export interface NodeCsr {
  csrPem: string
  /** PKCS#8 PEM of the new RSA key the certificate will certify: keep it next to node.crt */
  x509KeyPem: string
  peerId: string
}

export interface VerifiedCsr {
  peerId: string
  name: string
  /** SPKI PEM of the RSA key to certify */
  publicKeyPem: string
}

/** The bytes the proof-of-possession signature covers. */
export function csrProofData (peerId: string, spkiDer: Uint8Array): Uint8Array {
  const prefix = Buffer.from(`${CSR_PROOF_CONTEXT}${peerId}\n`, 'utf8')
  return Buffer.concat([prefix, spkiDer])
}

export function validateNodeName (name: unknown): string {
  if (typeof name !== 'string' || name.trim() === '' || name.length > MAX_NODE_NAME_LENGTH ||
    /\p{Cc}/u.test(name)) {
    throw new CaError('csr_malformed',
      `invalid node name ${JSON.stringify(name)}: expected 1-${MAX_NODE_NAME_LENGTH} printable characters`)
  }
  return name
}

export async function createNodeCsr (options: CreateNodeCsrOptions): Promise<NodeCsr> {
  const { privateKey } = options
  const name = validateNodeName(options.name)
  if (privateKey?.type !== 'Ed25519') {
    throw new TypeError(`createNodeCsr needs a libp2p Ed25519 private key, got ${String(privateKey?.type)}`)
  }
  const peerId = peerIdFromPrivateKey(privateKey).toString()
  const rsa = generateRsaKey()

  const signature = await privateKey.sign(csrProofData(peerId, rsa.spkiDer))

  const { asn1 } = forge
  const csr = forge.pki.createCertificationRequest()
  csr.publicKey = rsa.publicKey
  csr.setSubject(nameAttributes(name))
  csr.setAttributes([{
    name: 'extensionRequest',
    extensions: [
      { name: 'subjectAltName', altNames: [{ type: 6, value: PEER_URI_PREFIX + peerId }] },
      {
        id: forgeOid(OID_PEER_KEY_PROOF),
        critical: false,
        value: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, toBinary(signature))
      }
    ]
  }])

  return {
    csrPem: signForgeCsr(csr, rsa.privateKeyPem),
    x509KeyPem: rsa.privateKeyPem,
    peerId
  }
}

interface Extension { id: string, name?: string, value: string, altNames?: Array<{ type: number, value: string }> }

/**
 * Checks a node CSR: well formed, self-signature valid, and a valid proof that
 * whoever made it holds the libp2p key of the PeerId it names.
 */
export async function verifyNodeCsr (csrPem: string): Promise<VerifiedCsr> {
  let csr: forge.pki.CertificateSigningRequest
  let signed: SignedParts
  let spkiDer: Uint8Array
  let rsaKey: KeyObject
  try {
    const der = pemToDer(csrPem, ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'])
    // CertificationRequest ::= SEQUENCE { CertificationRequestInfo, AlgorithmIdentifier, BIT STRING }
    // CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, [0] attributes }
    signed = splitSigned(der)
    const spki = childrenOf(der, signed.tbsTlv)[2]
    if (spki === undefined || spki.tag !== TAG_SEQUENCE) throw new Error('no SubjectPublicKeyInfo')
    spkiDer = tlvBytes(der, spki)
    rsaKey = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' })
    if (rsaKey.asymmetricKeyType !== 'rsa') throw new Error(`unsupported ${String(rsaKey.asymmetricKeyType)} key: only RSA keys can be certified`)
    csr = forge.pki.certificationRequestFromAsn1(forgeAsn1FromDer(der), true)
  } catch (err) {
    throw new CaError('csr_malformed', `malformed certificate signing request: ${describeError(err)}`, { cause: err })
  }

  if (!verifySigned(signed, rsaKey)) {
    throw new CaError('csr_bad_signature', 'the CSR self-signature does not verify (tampered or corrupt request)')
  }

  const name = commonNameOf(csr.subject)
  if (name === '') throw new CaError('csr_malformed', 'the CSR subject has no common name (node name)')
  try {
    validateNodeName(name)
  } catch (err) {
    throw new CaError('csr_malformed', `the CSR subject CN is not a valid node name: ${describeError(err)}`)
  }

  const extensions: Extension[] = []
  try {
    for (const attr of csr.attributes as Array<{ type?: string, extensions?: Extension[] }>) {
      if (attr.type === forge.pki.oids.extensionRequest && Array.isArray(attr.extensions)) {
        extensions.push(...attr.extensions)
      }
    }
  } catch (err) {
    throw new CaError('csr_malformed', `malformed CSR extensions: ${describeError(err)}`)
  }

  const peerUris: string[] = []
  for (const ext of extensions) {
    if (ext.name !== 'subjectAltName' || !Array.isArray(ext.altNames)) continue
    for (const alt of ext.altNames) {
      if (alt.type === 6 && typeof alt.value === 'string' && alt.value.startsWith(PEER_URI_PREFIX)) {
        peerUris.push(alt.value.slice(PEER_URI_PREFIX.length))
      }
    }
  }
  const proofs = extensions.filter(e => e.id === forgeOid(OID_PEER_KEY_PROOF))
  if (peerUris.length === 0) {
    throw new CaError('csr_missing_proof', `the CSR names no PeerId (no ${PEER_URI_PREFIX}<PeerId> URI SAN)`)
  }
  if (peerUris.length > 1) throw new CaError('csr_malformed', 'the CSR names more than one PeerId')
  if (proofs.length === 0) {
    throw new CaError('csr_missing_proof', 'the CSR carries no proof of possession of the libp2p key')
  }
  if (proofs.length > 1) throw new CaError('csr_malformed', 'the CSR carries more than one proof of possession')
  const peerId = peerUris[0]

  let signature: Uint8Array
  try {
    const value = toBuffer(proofs[0].value)
    const tlv = readSingleTlv(value)
    if (tlv.tag !== TAG_OCTET_STRING) throw new Error('not an OCTET STRING')
    signature = value.subarray(tlv.contentStart, tlv.end)
  } catch (err) {
    throw new CaError('csr_bad_proof', `malformed proof of possession: ${describeError(err)}`)
  }

  let publicKey
  try {
    const id = peerIdFromString(peerId)
    if (id.type !== 'Ed25519' || id.publicKey === undefined) {
      throw new CaError('csr_bad_proof', `only Ed25519 PeerIds are accepted, got a ${id.type} PeerId`)
    }
    if (id.toString() !== peerId) throw new Error('PeerId is not in its canonical form')
    publicKey = id.publicKey
  } catch (err) {
    if (err instanceof CaError) throw err
    throw new CaError('csr_malformed', `the CSR's PeerId ${JSON.stringify(peerId)} is invalid: ${describeError(err)}`)
  }

  let proofOk = false
  try {
    proofOk = await publicKey.verify(csrProofData(peerId, spkiDer), signature)
  } catch {
    // a signature that does not even parse is a failed proof, refused just below
    proofOk = false
  }
  if (!proofOk) {
    throw new CaError('csr_bad_proof', `the proof of possession was not made by the key of ${peerId}`)
  }

  const publicKeyPem = rsaKey.export({ type: 'spki', format: 'pem' }).toString()
  return { peerId, name, publicKeyPem }
}
