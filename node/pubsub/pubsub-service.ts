import type { GossipSub, Message } from '@libp2p/gossipsub'
import { pubsubTopic, PUBSUB_TOPIC_PREFIX } from '../../protocols/ids.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { TOPIC_NAME } from './constants.ts'
import { admissionVerdict, toValidatorResult, type AdmissionCheck } from './topic-validation.ts'

export interface PubsubMessage {
  topic: string
  from: string
  seqno: string
  data: Uint8Array
  receivedAt: number
}

export type PubsubListener = (message: PubsubMessage) => void

/** The service has no tuning options yet; the shape is there for the next one. */
export type PubsubInit = Record<string, never>

export interface PubsubComponents {
  /** the gossipsub service: messages, topic validators, (un)subscribing, publishing, subscriber counts */
  pubsub: Pick<GossipSub, 'addEventListener' | 'removeEventListener' | 'topicValidators' | 'subscribe' | 'unsubscribe' | 'publish' | 'getSubscribers'>
  /** the admission check every topic's validator applies */
  peers: AdmissionCheck
}

export class TopicNameError extends BkgError {
  constructor (message: string) {
    super('invalid_topic', 400, message)
  }
}

/**
 * Operator pub/sub over gossipsub (as Kubo's `pubsub pub/sub`): named topics under
 * PUBSUB_TOPIC_PREFIX, subscribed while at least one local listener wants them.
 */
export class PubsubService {
  private readonly components: PubsubComponents
  private readonly listeners = new Map<string, Set<PubsubListener>>()
  private readonly onMessage = (event: CustomEvent<Message>): void => {
    const message = event.detail
    if (message.type !== 'signed' || !message.topic.startsWith(PUBSUB_TOPIC_PREFIX)) return
    const name = message.topic.slice(PUBSUB_TOPIC_PREFIX.length)
    const listeners = this.listeners.get(name)
    if (listeners == null) return
    const delivered: PubsubMessage = {
      topic: name,
      from: message.from.toString(),
      seqno: message.sequenceNumber.toString(),
      data: message.data,
      receivedAt: Date.now()
    }
    for (const listener of listeners) listener(delivered)
  }

  constructor (components: PubsubComponents, _init: PubsubInit = {}) {
    this.components = components
  }

  start (): void {
    this.components.pubsub.addEventListener('message', this.onMessage)
  }

  stop (): void {
    this.components.pubsub.removeEventListener('message', this.onMessage)
    for (const name of this.listeners.keys()) this.leave(name)
    this.listeners.clear()
  }

  /** Starts receiving a topic; the returned function stops this listener. */
  subscribe (name: string, listener: PubsubListener): () => void {
    assertTopicName(name)
    let set = this.listeners.get(name)
    if (set == null) {
      set = new Set()
      this.listeners.set(name, set)
      const { pubsub, peers } = this.components
      pubsub.topicValidators.set(pubsubTopic(name), (source, message) => toValidatorResult[admissionVerdict(peers, source, message)])
      pubsub.subscribe(pubsubTopic(name))
    }
    set.add(listener)
    return () => {
      const current = this.listeners.get(name)
      if (current == null) return
      current.delete(listener)
      if (current.size === 0) {
        this.listeners.delete(name)
        this.leave(name)
      }
    }
  }

  async publish (name: string, data: Uint8Array): Promise<{ recipients: number }> {
    assertTopicName(name)
    const result = await this.components.pubsub.publish(pubsubTopic(name), data)
    return { recipients: result.recipients.length }
  }

  topics (): Array<{ topic: string, listeners: number, peers: number }> {
    const { pubsub } = this.components
    return [...this.listeners].map(([name, set]) => ({
      topic: name,
      listeners: set.size,
      peers: pubsub.getSubscribers(pubsubTopic(name)).length
    }))
  }

  private leave (name: string): void {
    const { pubsub } = this.components
    pubsub.unsubscribe(pubsubTopic(name))
    pubsub.topicValidators.delete(pubsubTopic(name))
  }
}

export function pubsubService (init: PubsubInit = {}): (components: PubsubComponents) => PubsubService {
  return (components) => new PubsubService(components, init)
}

export function assertTopicName (name: string): void {
  if (!TOPIC_NAME.test(name)) {
    throw new TopicNameError(`topic "${name.slice(0, 64)}" is not valid: 1-128 characters of A-Z a-z 0-9 . _ - /, starting with a letter or digit`)
  }
}
