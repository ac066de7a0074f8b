import { generateKeyPair } from '@libp2p/crypto/keys'
import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import type { Ed25519PrivateKey, PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { beforeAll, describe, expect, it } from 'vitest'
import type { NodeCertificate } from '../../ca/index.ts'
import { AdmittedPeers } from '../../node/admission/admitted-peers.ts'
import { admissionVerdict, toValidatorResult } from '../../node/pubsub/topic-validation.ts'
import { certificate } from '../pubsub/fake-gossipsub.ts'

interface Peer { key: Ed25519PrivateKey, id: PeerId }

async function makePeer (): Promise<Peer> {
  const key = await generateKeyPair('Ed25519')
  return { key, id: peerIdFromPrivateKey(key) }
}

function cert (peerId: PeerId): NodeCertificate {
  return certificate(peerId)
}

async function signedFrom (origin: Peer, data = 'hello'): Promise<Message> {
  const bytes = new TextEncoder().encode(data)
  return {
    type: 'signed',
    from: origin.id,
    topic: 'bkg/pubsub/test',
    data: bytes,
    sequenceNumber: 1n,
    signature: await origin.key.sign(bytes),
    key: origin.key.publicKey
  }
}

describe('admissionVerdict', () => {
  let neighbour: Peer
  let stranger: Peer
  let origin: Peer
  let peers: AdmittedPeers
  let now: number

  beforeAll(async () => {
    [neighbour, stranger, origin] = await Promise.all([makePeer(), makePeer(), makePeer()])
  })

  const fresh = (): AdmittedPeers => {
    now = 1_000_000
    peers = new AdmittedPeers(() => now)
    peers.admit(neighbour.id, cert(neighbour.id))
    return peers
  }

  it('rejects an unsigned message even from an admitted neighbour', () => {
    fresh()
    const message: Message = { type: 'unsigned', topic: 'bkg/pubsub/test', data: new Uint8Array([1]) }
    expect(admissionVerdict(peers, neighbour.id, message)).toBe('reject')
  })

  it('rejects a message relayed by a peer that is not admitted', async () => {
    fresh()
    expect(admissionVerdict(peers, stranger.id, await signedFrom(stranger))).toBe('reject')
    expect(admissionVerdict(peers, stranger.id, await signedFrom(neighbour))).toBe('reject')
  })

  it('accepts a signed message from an admitted neighbour about itself', async () => {
    fresh()
    expect(admissionVerdict(peers, neighbour.id, await signedFrom(neighbour))).toBe('accept')
  })

  it('accepts an unknown origin on the word of the admitted neighbour that relayed it', async () => {
    fresh()
    expect(admissionVerdict(peers, neighbour.id, await signedFrom(origin))).toBe('accept')
  })

  it('rejects a message whose origin is denied, until the denial expires', async () => {
    fresh()
    peers.deny(origin.id, { code: 'cert_revoked', message: 'revoked' }, 5000)
    const message = await signedFrom(origin)
    expect(admissionVerdict(peers, neighbour.id, message)).toBe('reject')
    now += 5000
    expect(admissionVerdict(peers, neighbour.id, message)).toBe('accept')
  })

  it('rejects again once the relaying neighbour is removed or denied', async () => {
    fresh()
    const message = await signedFrom(neighbour)
    peers.remove(neighbour.id)
    expect(admissionVerdict(peers, neighbour.id, message)).toBe('reject')
    peers.admit(neighbour.id, cert(neighbour.id))
    expect(admissionVerdict(peers, neighbour.id, message)).toBe('accept')
    peers.deny(neighbour.id, { code: 'cert_revoked', message: 'revoked' }, 60_000)
    expect(admissionVerdict(peers, neighbour.id, message)).toBe('reject')
  })

  it('maps verdicts to gossipsub validator results', () => {
    expect(toValidatorResult.accept).toBe(TopicValidatorResult.Accept)
    expect(toValidatorResult.reject).toBe(TopicValidatorResult.Reject)
    expect(toValidatorResult.ignore).toBe(TopicValidatorResult.Ignore)
  })
})
