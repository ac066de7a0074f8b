import { describe, expect, it, beforeAll, afterAll } from 'vitest'
import { loadLibp2pKey } from '../../node/identity/index.ts'
import { isAcceptableOperation, signRecord } from '../../node/replication/replica-records.ts'
import { recordKey, type ReplicaRecord, type ReplicationJobRecord } from '../../protocols/replicas.ts'
import type { PrivateKey } from '@libp2p/interface'
import { tempDir } from '../helpers/mesh.ts'
import { makeCa, makeIdentity, type Identity } from './helpers.ts'

describe('replica log records: who may write what', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let caPem: string
  let member: Identity & { key: PrivateKey, peerId: string }
  let admin: Identity & { key: PrivateKey, peerId: string }
  let foreign: Identity & { key: PrivateKey, peerId: string }

  async function withKey (identity: Identity): Promise<Identity & { key: PrivateKey, peerId: string }> {
    return { ...identity, key: await loadLibp2pKey(identity.paths), peerId: identity.cert.peerId }
  }

  beforeAll(async () => {
    tmp = await tempDir()
    const ca = await makeCa(tmp.dir, 'ca')
    caPem = ca.caPem
    member = await withKey(await makeIdentity(ca.caDir, tmp.dir, 'member', ['member']))
    admin = await withKey(await makeIdentity(ca.caDir, tmp.dir, 'admin', ['admin', 'member']))
    const other = await makeCa(tmp.dir, 'other-ca')
    foreign = await withKey(await makeIdentity(other.caDir, tmp.dir, 'foreign', ['admin', 'member']))
  })

  afterAll(async () => { await tmp?.remove() })

  const replica = (peerId: string): ReplicaRecord => ({ kind: 'replica', peerId, name: 'm', version: '1.0.0', held: true, at: new Date().toISOString() })
  const job = (createdBy: string): ReplicationJobRecord => {
    const now = new Date().toISOString()
    return { kind: 'job', id: '0123456789abcdef', name: 'm', version: '1.0.0', namespace: 'lab', replicas: 3, state: 'active', createdBy, createdAt: now, at: now }
  }
  const sign = async (record: ReplicaRecord | ReplicationJobRecord, who: typeof member) =>
    await signRecord(record, { privateKey: who.key, peerId: who.peerId, certPem: who.certPem })
  const put = (value: unknown, key: string) => ({ op: 'PUT', key, value })

  it('accepts a node\'s own replica record and an admin node\'s job', async () => {
    const own = replica(member.peerId)
    expect(await isAcceptableOperation(put(await sign(own, member), recordKey(own)), caPem)).toBe(true)
    const created = job(admin.peerId)
    expect(await isAcceptableOperation(put(await sign(created, admin), recordKey(created)), caPem)).toBe(true)
  })

  it('refuses deletes, unsigned values, other keys, and records about another node', async () => {
    const own = replica(member.peerId)
    const signed = await sign(own, member)
    expect(await isAcceptableOperation({ op: 'DEL', key: recordKey(own), value: null }, caPem)).toBe(false)
    expect(await isAcceptableOperation(put(own, recordKey(own)), caPem)).toBe(false)
    expect(await isAcceptableOperation(put(signed, `replica/${admin.peerId}/m/1.0.0`), caPem)).toBe(false)
    // the member claims the admin holds a model: signer ≠ subject
    const aboutAdmin = replica(admin.peerId)
    expect(await isAcceptableOperation(put(await sign(aboutAdmin, member), recordKey(aboutAdmin)), caPem)).toBe(false)
    expect(await isAcceptableOperation(undefined, caPem)).toBe(false)
    expect(await isAcceptableOperation(put('{"record":1}', recordKey(own)), caPem)).toBe(false)
  })

  it('refuses a tampered record, a signature by another key, and a certificate of another node', async () => {
    const own = replica(member.peerId)
    const signed = await sign(own, member)
    const tampered = { ...signed, record: { ...own, version: '2.0.0' } }
    expect(await isAcceptableOperation(put(tampered, `replica/${member.peerId}/m/2.0.0`), caPem)).toBe(false)
    // right certificate, signature made with the admin's key
    const wrongKey = { ...(await sign(own, admin)), signer: member.peerId, cert: member.certPem }
    expect(await isAcceptableOperation(put(wrongKey, recordKey(own)), caPem)).toBe(false)
    // the admin's certificate passed off for the member's PeerId
    const stolenCert = { ...signed, cert: admin.certPem }
    expect(await isAcceptableOperation(put(stolenCert, recordKey(own)), caPem)).toBe(false)
  })

  it('refuses a job from a node without the admin role and anything certified by another CA', async () => {
    const byMember = job(member.peerId)
    expect(await isAcceptableOperation(put(await sign(byMember, member), recordKey(byMember)), caPem)).toBe(false)
    const byForeign = job(foreign.peerId)
    expect(await isAcceptableOperation(put(await sign(byForeign, foreign), recordKey(byForeign)), caPem)).toBe(false)
    const foreignReplica = replica(foreign.peerId)
    expect(await isAcceptableOperation(put(await sign(foreignReplica, foreign), recordKey(foreignReplica)), caPem)).toBe(false)
  })

  it('refuses a record dated outside the signer\'s certificate validity', async () => {
    const old = { ...replica(member.peerId), at: '2001-01-01T00:00:00.000Z' }
    expect(await isAcceptableOperation(put(await sign(old, member), recordKey(old)), caPem)).toBe(false)
  })
})
