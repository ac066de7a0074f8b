import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { AdmittedPeers } from '../../node/admission/index.ts'
import { pubsubService, TopicNameError, type PubsubMessage, type PubsubService } from '../../node/pubsub/index.ts'
import { pubsubTopic } from '../../protocols/ids.ts'
import { certificate, FakeGossipsub, makePeerId, signedMessage } from './fake-gossipsub.ts'

describe('PubsubService', () => {
  let neighbour: PeerId
  let stranger: PeerId
  let gossip: FakeGossipsub
  let peers: AdmittedPeers
  let service: PubsubService

  beforeAll(async () => {
    [neighbour, stranger] = await Promise.all([makePeerId(), makePeerId()])
  })

  beforeEach(() => {
    gossip = new FakeGossipsub()
    peers = new AdmittedPeers()
    peers.admit(neighbour, certificate(neighbour))
    service = pubsubService()({ pubsub: gossip.as(), peers })
    service.start()
  })

  it('refuses topic names outside 1-128 characters of A-Z a-z 0-9 . _ - / starting with a letter or digit', async () => {
    for (const bad of ['', '/chat', '.chat', 'a b', 'chat?', 'ü', 'x'.repeat(129)]) {
      expect(() => service.subscribe(bad, () => {}), bad).toThrow(TopicNameError)
      await expect(service.publish(bad, new Uint8Array(1)), bad).rejects.toMatchObject({ code: 'invalid_topic', status: 400 })
    }
    expect(gossip.subscribeCalls).toEqual([])
    expect(gossip.published).toEqual([])
    for (const good of ['chat', 'a', 'lab/readings.v1_x-y', 'x'.repeat(128)]) {
      expect(() => service.subscribe(good, () => {}), good).not.toThrow()
    }
    expect(gossip.subscribeCalls).toEqual(['chat', 'a', 'lab/readings.v1_x-y', 'x'.repeat(128)].map(pubsubTopic))
  })

  it('subscribes a topic once for its first listener and leaves it after its last', () => {
    const topic = pubsubTopic('chat')
    const first = service.subscribe('chat', () => {})
    const second = service.subscribe('chat', () => {})
    expect(gossip.subscribeCalls).toEqual([topic])
    expect(gossip.topicValidators.has(topic)).toBe(true)
    expect(service.topics()).toEqual([{ topic: 'chat', listeners: 2, peers: 0 }])

    first()
    first() // a second call of the same unsubscribe changes nothing
    expect(gossip.unsubscribeCalls).toEqual([])
    expect(service.topics()).toEqual([{ topic: 'chat', listeners: 1, peers: 0 }])

    second()
    expect(gossip.unsubscribeCalls).toEqual([topic])
    expect(gossip.topicValidators.has(topic)).toBe(false)
    expect(service.topics()).toEqual([])

    service.subscribe('chat', () => {})
    expect(gossip.subscribeCalls).toEqual([topic, topic])
  })

  it('delivers a message only to the listeners of its topic', () => {
    const onA: PubsubMessage[] = []
    const onB: PubsubMessage[] = []
    service.subscribe('a', (message) => onA.push(message))
    service.subscribe('b', (message) => onB.push(message))

    gossip.deliver(signedMessage(neighbour, pubsubTopic('a'), 'hello', 7n))
    expect(onA).toHaveLength(1)
    expect(onA[0]).toMatchObject({ topic: 'a', from: neighbour.toString(), seqno: '7', data: new TextEncoder().encode('hello') })
    expect(onB).toEqual([])

    // a topic nobody listens to, another service's topic, an unsigned message: nothing
    gossip.deliver(signedMessage(neighbour, pubsubTopic('c'), 'x'))
    gossip.deliver(signedMessage(neighbour, 'bkg/events/lab', 'x'))
    gossip.deliver({ type: 'unsigned', topic: pubsubTopic('a'), data: new Uint8Array(1) })
    expect(onA).toHaveLength(1)
    expect(onB).toEqual([])
  })

  it('validates a topic\'s messages with the admission check', async () => {
    service.subscribe('chat', () => {})
    const validate = gossip.topicValidators.get(pubsubTopic('chat'))!
    expect(await validate(neighbour, signedMessage(neighbour, pubsubTopic('chat'), 'x'))).toBe(TopicValidatorResult.Accept)
    expect(await validate(stranger, signedMessage(stranger, pubsubTopic('chat'), 'x'))).toBe(TopicValidatorResult.Reject)
    peers.deny(stranger, { code: 'cert_revoked', message: 'revoked' }, 60_000)
    expect(await validate(neighbour, signedMessage(stranger, pubsubTopic('chat'), 'x'))).toBe(TopicValidatorResult.Reject)
  })

  it('publishes on the prefixed topic and counts the recipients', async () => {
    gossip.recipients = [neighbour, stranger]
    expect(await service.publish('chat', new Uint8Array([1, 2]))).toEqual({ recipients: 2 })
    expect(gossip.published).toEqual([{ topic: pubsubTopic('chat'), data: new Uint8Array([1, 2]) }])
  })

  it('stop leaves every topic and delivers nothing more', () => {
    const received: PubsubMessage[] = []
    service.subscribe('a', (message) => received.push(message))
    service.subscribe('b', () => {})
    service.stop()
    expect(gossip.unsubscribeCalls.sort()).toEqual([pubsubTopic('a'), pubsubTopic('b')])
    expect(gossip.topicValidators.size).toBe(0)
    expect(service.topics()).toEqual([])
    gossip.deliver(signedMessage(neighbour, pubsubTopic('a'), 'late'))
    expect(received).toEqual([])
  })
})
