import { generateKeyPair } from '@libp2p/crypto/keys'
import type { GossipSub, Message, TopicValidatorFn } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { NodeCertificate } from '../../ca/index.ts'

/**
 * The part of gossipsub the node's topic services use, in memory: topic validators, the
 * subscribed topics, what was published (answered with `recipients` peers), and `deliver` to
 * hand the services a message as gossipsub's 'message' event would.
 */
export class FakeGossipsub extends EventTarget {
  readonly topicValidators = new Map<string, TopicValidatorFn>()
  readonly subscribed = new Set<string>()
  readonly subscribeCalls: string[] = []
  readonly unsubscribeCalls: string[] = []
  readonly published: Array<{ topic: string, data: Uint8Array }> = []
  recipients: PeerId[] = []
  subscribers: PeerId[] = []
  publishError: Error | null = null

  subscribe (topic: string): void {
    this.subscribeCalls.push(topic)
    this.subscribed.add(topic)
  }

  unsubscribe (topic: string): void {
    this.unsubscribeCalls.push(topic)
    this.subscribed.delete(topic)
  }

  async publish (topic: string, data: Uint8Array): Promise<{ recipients: PeerId[] }> {
    if (this.publishError != null) throw this.publishError
    this.published.push({ topic, data })
    return { recipients: this.recipients }
  }

  getSubscribers (_topic: string): PeerId[] {
    return this.subscribers
  }

  deliver (message: Message): void {
    this.dispatchEvent(new CustomEvent('message', { detail: message }))
  }

  /** typed as the gossipsub members a service's Components name */
  as<K extends keyof GossipSub> (): Pick<GossipSub, K> {
    return this as unknown as Pick<GossipSub, K>
  }
}

export async function makePeerId (): Promise<PeerId> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
}

/** A signed gossip message (the signature is not checked by the services; gossipsub did that). */
export function signedMessage (from: PeerId, topic: string, data: Uint8Array | string, sequenceNumber = 1n): Message {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data
  return { type: 'signed', from, topic, data: bytes, sequenceNumber, signature: new Uint8Array(64), key: from.publicKey! } as Message
}

export function certificate (peerId: PeerId | string, overrides: Partial<NodeCertificate> = {}): NodeCertificate {
  return {
    serial: '0a',
    peerId: peerId.toString(),
    name: 'n',
    roles: ['member'],
    namespaces: [],
    dnsNames: [],
    ipAddresses: [],
    notBefore: new Date(0),
    notAfter: new Date(Date.UTC(2100, 0, 1)),
    issuer: 'Test Operator',
    pem: '',
    fingerprint: '00',
    ...overrides
  }
}
