import type { GossipSub } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { namespaceOfTopic } from '../../protocols/ids.ts'
import type { AdmittedPeers } from '../admission/index.ts'

type MayJoin = (peer: string, topic: string) => boolean

interface GossipsubInternals {
  handleReceivedSubscription: (from: PeerId, topic: string, subscribe: boolean) => boolean
  handleGraft: (id: string, graft: Array<{ topicID?: string }>) => Promise<unknown>
}

/**
 * Keeps peers out of topics they may not read. Gossipsub forwards a topic's messages to every
 * peer that subscribed to it or grafted itself into its mesh, and has no per-peer hook for
 * either, so this wraps the two places it accepts them: a refused subscription is ignored (the
 * peer never receives the topic, not even IHAVE gossip) and a refused GRAFT is dropped.
 *
 * These are internals of @libp2p/gossipsub 17 (pinned in package.json); the namespace isolation
 * test fails if an upgrade moves them.
 */
export function guardTopicMembership (pubsub: GossipSub, mayJoin: MayJoin): () => void {
  const internals = pubsub as unknown as GossipsubInternals
  const subscription = internals.handleReceivedSubscription
  const graft = internals.handleGraft
  if (typeof subscription !== 'function' || typeof graft !== 'function') {
    throw new Error('this gossipsub version has no handleReceivedSubscription/handleGraft: topic membership cannot be enforced')
  }
  internals.handleReceivedSubscription = function (from, topic, subscribe) {
    if (subscribe && !mayJoin(from.toString(), topic)) return false
    return subscription.call(this, from, topic, subscribe)
  }
  internals.handleGraft = async function (id, grafts) {
    return await graft.call(this, id, grafts.filter((g) => g.topicID == null || mayJoin(id, g.topicID)))
  }
  return () => {
    internals.handleReceivedSubscription = subscription
    internals.handleGraft = graft
  }
}

/** Namespace topics (events, broadcast) admit only peers whose certificate lists the namespace. */
export function guardNamespaceTopics (pubsub: GossipSub, peers: AdmittedPeers): () => void {
  return guardTopicMembership(pubsub, (peer, topic) => {
    const namespace = namespaceOfTopic(topic)
    return namespace == null || peers.get(peer)?.namespaces.includes(namespace) === true
  })
}
