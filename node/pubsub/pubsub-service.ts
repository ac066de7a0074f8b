import type { Message } from '@libp2p/gossipsub'
import { pubsubTopic, PUBSUB_TOPIC_PREFIX } from '../../protocols/ids.ts'
import type { AdmittedPeers } from '../admission/index.ts'
import type { Host } from '../p2p/index.ts'
import { admissionVerdict, toValidatorResult } from './topic-validation.ts'
import { BkgError } from '../../lib/bkg-error.ts'

export interface PubsubMessage {
  topic: string
  from: string
  seqno: string
  data: Uint8Array
  receivedAt: number
}

export type PubsubListener = (message: PubsubMessage) => void

export interface PubsubDeps {
  host: Host
  peers: AdmittedPeers
}

export const TOPIC_NAME = /^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$/

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
  private readonly deps: PubsubDeps
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

  constructor (deps: PubsubDeps) {
    this.deps = deps
  }

  start (): void {
    this.deps.host.services.pubsub.addEventListener('message', this.onMessage)
  }

  stop (): void {
    const { pubsub } = this.deps.host.services
    pubsub.removeEventListener('message', this.onMessage)
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
      const { pubsub } = this.deps.host.services
      pubsub.topicValidators.set(pubsubTopic(name), (source, message) => toValidatorResult[admissionVerdict(this.deps.peers, source, message)])
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
    const result = await this.deps.host.services.pubsub.publish(pubsubTopic(name), data)
    return { recipients: result.recipients.length }
  }

  topics (): Array<{ topic: string, listeners: number, peers: number }> {
    const { pubsub } = this.deps.host.services
    return [...this.listeners].map(([name, set]) => ({
      topic: name,
      listeners: set.size,
      peers: pubsub.getSubscribers(pubsubTopic(name)).length
    }))
  }

  private leave (name: string): void {
    const { pubsub } = this.deps.host.services
    pubsub.unsubscribe(pubsubTopic(name))
    pubsub.topicValidators.delete(pubsubTopic(name))
  }
}

export function assertTopicName (name: string): void {
  if (!TOPIC_NAME.test(name)) {
    throw new TopicNameError(`topic "${name.slice(0, 64)}" is not valid: 1-128 characters of A-Z a-z 0-9 . _ - /, starting with a letter or digit`)
  }
}
