import { z } from 'zod'
import { NAMESPACE_PATTERN } from '../ca/roles.ts'
import { canonicalJson } from './model-package.ts'

/**
 * Records in the replica log (an OrbitDB key-value database shared by every admitted node).
 * Each value is a record signed with the writer's libp2p Ed25519 key and carries the writer's
 * operator-CA certificate, so any node can check it without having met the writer:
 *
 *   key `replica/<peerId>/<name>/<version>` → a node says it holds (or no longer holds) a
 *     verified copy; only that node may write its key.
 *   key `job/<id>` → a replication job ("keep N replicas of model X in namespace Y"), written by a
 *     node whose certificate has the `admin` role; cancelled by writing it again.
 *
 * Deleting is never allowed (OrbitDB DEL ops are refused): state changes are new signed records.
 */
export const SIGNATURE_CONTEXT = 'bkg-replica-record/1\n'
export const MAX_REPLICAS = 64
export const MAX_CERT_PEM = 8192

const ModelName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/)
const Version = z.string().min(1).max(64)
const PeerIdString = z.string().min(10).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/)
const Timestamp = z.iso.datetime()

export const ReplicaRecord = z.object({
  kind: z.literal('replica'),
  peerId: PeerIdString,
  name: ModelName,
  version: Version,
  held: z.boolean(),
  at: Timestamp
}).strict()
export type ReplicaRecord = z.infer<typeof ReplicaRecord>

export const ReplicationJobRecord = z.object({
  kind: z.literal('job'),
  id: z.string().regex(/^[a-f0-9]{16}$/),
  name: ModelName,
  version: Version,
  namespace: z.string().regex(NAMESPACE_PATTERN),
  replicas: z.number().int().min(1).max(MAX_REPLICAS),
  state: z.enum(['active', 'cancelled']),
  createdBy: PeerIdString,
  createdAt: Timestamp,
  at: Timestamp
}).strict()
export type ReplicationJobRecord = z.infer<typeof ReplicationJobRecord>

export const LogRecord = z.discriminatedUnion('kind', [ReplicaRecord, ReplicationJobRecord])
export type LogRecord = z.infer<typeof LogRecord>

export const SignedRecord = z.object({
  record: LogRecord,
  /** PeerId whose Ed25519 key made `signature` */
  signer: PeerIdString,
  /** the signer's certificate (PEM), checked against the operator CA */
  cert: z.string().max(MAX_CERT_PEM),
  /** base64 Ed25519 signature over SIGNATURE_CONTEXT + canonical JSON of `record` */
  signature: z.string().max(128)
}).strict()
export type SignedRecord = z.infer<typeof SignedRecord>

export function recordKey (record: LogRecord): string {
  return record.kind === 'replica'
    ? `replica/${record.peerId}/${record.name}/${record.version}`
    : `job/${record.id}`
}

export function recordSigningBytes (record: LogRecord): Uint8Array {
  return new TextEncoder().encode(SIGNATURE_CONTEXT + canonicalJson(record))
}
