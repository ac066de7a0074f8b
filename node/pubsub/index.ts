/**
 * Gossip topics: the API's pubsub service (`bkg/pubsub/1/<name>` topics for clients), the guard
 * that keeps peers out of namespace topics their certificate does not list, and the admission
 * check every gossip topic of the node applies before its own validation (`admissionVerdict`).
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { admissionVerdict, pubsubService, toValidatorResult, type GossipVerdict } from '../pubsub/index.ts'
 *
 * // a service's topic validator: admission first, then its own checks
 * host.services.pubsub.topicValidators.set(TOPIC, async (source, message) => {
 *   const verdict: GossipVerdict = admissionVerdict(peers, source, message) === 'accept' ? await check(message) : 'reject'
 *   return toValidatorResult[verdict]
 * })
 *
 * const pubsub = pubsubService()({ pubsub: host.services.pubsub, peers })
 * pubsub.start()
 * const unsubscribe = pubsub.subscribe('chat', (message) => console.log(message.from, message.data))
 * await pubsub.publish('chat', new TextEncoder().encode('hello'))
 */
export {
  assertTopicName, pubsubService, PubsubService, TopicNameError,
  type PubsubComponents, type PubsubInit, type PubsubListener, type PubsubMessage
} from './pubsub-service.ts'
export { TOPIC_NAME } from './constants.ts'
export { guardNamespaceTopics } from './topic-membership.ts'
export { admissionVerdict, toValidatorResult, type AdmissionCheck, type GossipVerdict } from './topic-validation.ts'
