import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { verifyNodeCertificate } from '../../ca/index.ts'
import { recordKey, recordSigningBytes, SignedRecord, type LogRecord } from '../../protocols/replicas.ts'

/** Signs a replica-log record with a node's libp2p key and attaches its certificate. */
export async function signRecord (record: LogRecord, signer: { privateKey: PrivateKey, peerId: string, certPem: string }): Promise<SignedRecord> {
  const signature = await signer.privateKey.sign(recordSigningBytes(record))
  return { record, signer: signer.peerId, cert: signer.certPem, signature: Buffer.from(signature).toString('base64') }
}

/**
 * Whether an OrbitDB operation may enter the replica log: a PUT of a signed record under its own
 * key, by the node it speaks for (replicas) or by a node with the admin role (jobs), whose
 * certificate chains to the operator CA and was valid when the record was made, and whose libp2p
 * key made the signature. Revocation is left to readers: a log must stay joinable after a CRL.
 */
export async function isAcceptableOperation (payload: { op?: unknown, key?: unknown, value?: unknown } | undefined, caPem: string): Promise<boolean> {
  if (payload?.op !== 'PUT') return false
  const parsed = SignedRecord.safeParse(payload.value)
  if (!parsed.success) return false
  const { record, signer, cert, signature } = parsed.data
  if (payload.key !== recordKey(record)) return false
  const author = record.kind === 'replica' ? record.peerId : record.createdBy
  if (signer !== author) return false
  try {
    const certificate = verifyNodeCertificate(cert, { caPem, crl: null, now: new Date(record.at), expectedPeerId: signer })
    if (record.kind === 'job' && !certificate.roles.includes('admin')) return false
    const key = peerIdFromString(signer).publicKey
    if (key == null) return false
    return await key.verify(recordSigningBytes(record), Buffer.from(signature, 'base64'))
  } catch {
    // a certificate or key that does not verify or parse: the entry is refused like any unsigned one
    return false
  }
}
