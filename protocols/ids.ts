/**
 * Every libp2p protocol ID and gossip topic BKG defines. Nothing outside `protocols/` spells one.
 *
 * Gossipsub (/meshsub/…), circuit relay (/libp2p/circuit/…) and DCUtR keep their standard IDs:
 * their implementations switch features on those exact strings. They are unreachable for a peer
 * without a certificate anyway, because admission runs inside the connection upgrade.
 */
export const PROTOCOL_PREFIX = 'bkg'

/** Certificate exchange, run over the Noise channel before any stream muxer exists. */
export const ADMISSION_PROTOCOL = '/bkg/admission/1.0.0'

/** Private Kademlia DHT: nodes never join (or answer) the public IPFS DHT. */
export const DHT_PROTOCOL = '/bkg/kad/1.0.0'

/** Gossip topic carrying CA-signed certificate revocation lists (PEM bytes). */
export const CRL_TOPIC = 'bkg/crl/1'

/** Operator pub/sub topics (the `/api/v1/pubsub` API) live under this prefix. */
export const PUBSUB_TOPIC_PREFIX = 'bkg/pubsub/'

export function pubsubTopic (name: string): string {
  return `${PUBSUB_TOPIC_PREFIX}${name}`
}

/** Gossip topic carrying signed model package envelopes (JSON) when a node publishes a model. */
export const MODELS_TOPIC = 'bkg/models/1'

/** Streams many verified content blocks per request: a want-list in, block frames out. */
export const BLOCKS_PROTOCOL = '/bkg/blocks/1.0.0'

/** Asks a peer for the signed envelope of a model it holds. */
export const MANIFESTS_PROTOCOL = '/bkg/manifests/1.0.0'

/**
 * OrbitDB's own heads-exchange protocol and update topics, moved under BKG's namespace: the
 * replica log's host wrapper turns `/orbitdb/heads/<address>` into `/bkg/orbitdb/heads/<address>`
 * and the topic `/orbitdb/<hash>` into `bkg/orbitdb/<hash>`.
 */
export const ORBITDB_PROTOCOL_PREFIX = '/bkg'
export const ORBITDB_TOPIC_PREFIX = 'bkg'

/** Whether a gossip topic is one of the replica log's (OrbitDB's `/orbitdb/…` moved under `bkg`). */
export function isOrbitdbTopic (topic: string): boolean {
  return topic.startsWith(`${ORBITDB_TOPIC_PREFIX}/orbitdb/`)
}

/** Name of the OrbitDB key-value database holding replica records and replication jobs. */
export const REPLICAS_DATABASE = 'bkg-replicas-1'

/** Signed events of one namespace travel on their own gossip topic: `bkg/events/<namespace>`. */
export const EVENTS_TOPIC_PREFIX = 'bkg/events/'

export function eventsTopic (namespace: string): string {
  return `${EVENTS_TOPIC_PREFIX}${namespace}`
}

/** Realtime broadcast and presence of one namespace between nodes: `bkg/broadcast/<namespace>`. */
export const BROADCAST_TOPIC_PREFIX = 'bkg/broadcast/'

export function broadcastTopic (namespace: string): string {
  return `${BROADCAST_TOPIC_PREFIX}${namespace}`
}

/** The namespace a topic belongs to (only peers certified for it may join), or null for mesh-wide topics. */
export function namespaceOfTopic (topic: string): string | null {
  for (const prefix of [EVENTS_TOPIC_PREFIX, BROADCAST_TOPIC_PREFIX]) {
    if (topic.startsWith(prefix)) return topic.slice(prefix.length)
  }
  return null
}

/** Catch-up of missed events: chain heads and ranges by origin and sequence number. */
export const EVENTS_SYNC_PROTOCOL = '/bkg/events/sync/1.0.0'

/** Runs one chat or embedding request on a peer's local model and streams the answer back, credit-paced. */
export const INFER_PROTOCOL = '/bkg/infer/1.0.0'

/** Gossip topic where nodes announce the models they have loaded and how busy their slots are. */
export const LLM_TOPIC = 'bkg/llm/1'
