import { EventEmitter } from 'node:events'
import { TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import type { NodeCertificate } from '../../ca/index.ts'
import { EventCursor, eventId, EventGossip, eventSigningBytes, MAX_EVENT_GOSSIP_BYTES, SignedEvent, type UnsignedEvent } from '../../protocols/events.ts'
import { eventsTopic } from '../../protocols/ids.ts'
import type { AdmittedPeers, Trust } from '../admission/index.ts'
import type { Principal } from '../auth/index.ts'
import type { Database, Tenant } from '../db/index.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { admissionVerdict } from '../pubsub/index.ts'
import { EventStore, type StoredEvent } from './event-store.ts'
import { EventSync, type EventSyncStreams } from './event-sync.ts'
import {
  DEFAULT_GOSSIP_MESSAGE_BYTES, DEFAULT_INGEST_BATCH, DEFAULT_MAX_QUEUED_EVENTS, DEFAULT_OWN_SEQ_TIMEOUT_MS, DEFAULT_RESYNC_INTERVAL_MS
} from './constants.ts'
import { HybridClock } from './hybrid-clock.ts'
import { parseUntrustedJson } from '../../protocols/untrusted-json.ts'

export interface NewEvent {
  namespace: string
  type: string
  payload: SignedEvent['payload']
}

export interface EventServiceInit {
  /** gossiped events waiting to be written; beyond this, catch-up fetches them later */
  maxQueued?: number
  /** gossiped events written in one transaction */
  ingestBatch?: number
  /** how often heads are compared with every admitted peer while the database is open */
  resyncIntervalMs?: number
  /** how long a node with an empty database waits for peers to tell it how far its own chains got */
  ownSeqTimeoutMs?: number
  /** new events are packed into gossip messages of up to this many bytes (capped at the wire limit) */
  gossipMessageBytes?: number
  /** events asked for per catch-up range request (at most 1000, the wire format's limit) */
  syncPageSize?: number
  /** how long one catch-up request, or the answer to one, may take */
  syncRequestTimeoutMs?: number
  /** concurrent `/bkg/events/sync` streams per connection, each way */
  syncMaxStreams?: number
}

export interface EventServiceComponents {
  /** this node's PeerId: the origin of the events it publishes */
  peerId: PeerId
  /** the gossipsub service: the namespace topics' validators and subscriptions, publishing */
  pubsub: Pick<GossipSub, 'topicValidators' | 'subscribe' | 'unsubscribe' | 'publish'>
  /** the host's stream handling for `/bkg/events/sync`: serving it and dialling peers */
  streams: EventSyncStreams
  /** this node's certificate (its namespaces) and checking an origin's certificate met through catch-up */
  trust: Pick<Trust, 'own' | 'verifyPeer'>
  /** admitted neighbours: their certificates, the admission check, and 'admitted' to start catching up */
  peers: Pick<AdmittedPeers, 'on' | 'off' | 'entries' | 'get' | 'isAdmitted' | 'denial'>
  /** signs the events this node publishes */
  privateKey: Pick<PrivateKey, 'sign'>
  db: Database
  log: Pick<Logger, 'debug' | 'warn' | 'error'>
}

export interface EventServiceEvents {
  /** an event was stored here (published here, or received); in arrival order */
  stored: [event: StoredEvent]
}

/**
 * Signed events per namespace: published through the API, spread over gossipsub (one topic per
 * namespace, joinable only by peers whose certificate lists it), stored idempotently in the
 * embedded database, and caught up from peers (`/bkg/events/sync`) after time offline or a gap.
 */
export class EventService extends EventEmitter<EventServiceEvents> {
  readonly store: EventStore
  private readonly components: EventServiceComponents
  private readonly maxQueued: number
  private readonly ingestBatch: number
  private readonly resyncIntervalMs: number
  private readonly ownSeqTimeoutMs: number
  private readonly gossipMessageBytes: number
  private readonly clock = new HybridClock()
  private readonly sync: EventSync
  /** certificates of origins met through catch-up (neighbours' are in AdmittedPeers) */
  private readonly originCerts = new Map<string, NodeCertificate>()
  private readonly namespaces: ReadonlySet<string>
  private queue: Array<{ event: SignedEvent, from: PeerId }> = []
  private flushing: Promise<void> | null = null
  private publishing: Promise<unknown> = Promise.resolve()
  private ownSeq: number | null = null
  private resync: NodeJS.Timeout | undefined
  private stopped = false
  private readonly onAdmitted = (peerId: string): void => {
    if (this.components.db.isOpen) this.sync.schedule(peerIdFromString(peerId))
  }

  constructor (components: EventServiceComponents, init: EventServiceInit = {}) {
    super()
    this.components = components
    this.maxQueued = init.maxQueued ?? DEFAULT_MAX_QUEUED_EVENTS
    this.ingestBatch = init.ingestBatch ?? DEFAULT_INGEST_BATCH
    this.resyncIntervalMs = init.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS
    this.ownSeqTimeoutMs = init.ownSeqTimeoutMs ?? DEFAULT_OWN_SEQ_TIMEOUT_MS
    this.gossipMessageBytes = Math.min(init.gossipMessageBytes ?? DEFAULT_GOSSIP_MESSAGE_BYTES, MAX_EVENT_GOSSIP_BYTES)
    this.namespaces = new Set(components.trust.own.namespaces)
    this.store = new EventStore(components.db)
    this.sync = new EventSync({
      streams: components.streams,
      pageSize: init.syncPageSize,
      requestTimeoutMs: init.syncRequestTimeoutMs,
      maxStreams: init.syncMaxStreams,
      peers: components.peers,
      store: this.store,
      log: components.log,
      namespaces: this.namespaces,
      databaseInUse: async () => this.components.db.isOpen || await this.components.db.exists(),
      certificateOf: (peer) => this.certificateOf(peer),
      learnCertificate: (peer, pem) => this.learnCertificate(peer, pem),
      verify: async (event) => await this.verify(event),
      ingest: async (events) => { await this.persist(events) }
    })
  }

  async start (): Promise<void> {
    await this.sync.start()
  }

  /** After gossipsub has started (libp2p starts a host's services side by side). */
  async afterStart (): Promise<void> {
    const { pubsub } = this.components
    for (const namespace of this.namespaces) {
      pubsub.topicValidators.set(eventsTopic(namespace), async (source, message) => await this.validate(namespace, source, message))
      pubsub.subscribe(eventsTopic(namespace))
    }
    this.components.peers.on('admitted', this.onAdmitted)
    // a node that stored events before opens its database now, so it can catch up on what it missed
    if (await this.components.db.exists()) void this.ready().catch((err: unknown) => this.components.log.error({ err }, 'could not open the event database'))
  }

  /** Before gossipsub stops. */
  beforeStop (): void {
    this.stopped = true
    clearInterval(this.resync)
    this.components.peers.off('admitted', this.onAdmitted)
    const { pubsub } = this.components
    for (const namespace of this.namespaces) {
      pubsub.unsubscribe(eventsTopic(namespace))
      pubsub.topicValidators.delete(eventsTopic(namespace))
    }
  }

  async stop (): Promise<void> {
    await this.sync.stop()
    await this.flushing
    await this.publishing
  }

  /** Namespaces this node's certificate lists: the only ones it stores and gossips. */
  get certifiedNamespaces (): ReadonlySet<string> {
    return this.namespaces
  }

  /** Opens the database, reads the chain heads and starts catching up with every admitted peer. */
  async ready (): Promise<void> {
    const wasOpen = this.components.db.isOpen
    await this.store.load()
    if (!wasOpen && !this.stopped && this.resync == null) {
      for (const [peerId] of this.components.peers.entries()) this.sync.schedule(peerIdFromString(peerId))
      this.resync = setInterval(() => {
        for (const [peerId] of this.components.peers.entries()) this.sync.schedule(peerIdFromString(peerId))
      }, this.resyncIntervalMs)
      this.resync.unref()
    }
  }

  /**
   * Signs, stores (acknowledged only once committed) and gossips new events of this node. The
   * caller's token decides the namespace and the database role the rows are written as.
   */
  async publish (principal: Principal, inputs: NewEvent[]): Promise<StoredEvent[]> {
    for (const input of inputs) this.assertMayPublish(principal, input.namespace)
    await this.ready()
    const tenant = tenantOf(principal)
    const run = this.publishing.then(async () => {
      const origin = this.components.peerId.toString()
      this.ownSeq ??= await this.recoverOwnSeq(origin)
      const prev = new Map<string, number>()
      const events: SignedEvent[] = []
      let seq = this.ownSeq
      for (const input of inputs) {
        seq++
        const unsigned: UnsignedEvent = {
          v: 1,
          namespace: input.namespace,
          type: input.type,
          payload: input.payload,
          origin,
          seq,
          prevSeq: prev.get(input.namespace) ?? this.store.head(origin, input.namespace),
          hlc: this.clock.tick()
        }
        prev.set(input.namespace, seq)
        const bytes = eventSigningBytes(unsigned)
        events.push({ ...unsigned, id: eventId(bytes), sig: Buffer.from(await this.components.privateKey.sign(bytes)).toString('base64') })
      }
      const stored = await this.store.insertAs(tenant, events)
      this.ownSeq = seq
      return stored
    })
    // the caller awaits run and gets its error; the chain only has to stay usable for the next publish
    this.publishing = run.catch(() => {})
    const stored = await run
    for (const event of stored) this.emit('stored', event)
    await this.gossip(stored)
    return stored
  }

  /** Sends new events to the namespace's peers, packed per namespace into messages of up to `gossipMessageBytes` (512 KiB). */
  private async gossip (events: StoredEvent[]): Promise<void> {
    const { pubsub } = this.components
    const byNamespace = new Map<string, string[]>()
    for (const event of events) {
      const list = byNamespace.get(event.namespace) ?? []
      list.push(JSON.stringify(toWire(event)))
      byNamespace.set(event.namespace, list)
    }
    for (const [namespace, encoded] of byNamespace) {
      let batch: string[] = []
      let bytes = 0
      const flush = async (): Promise<void> => {
        if (batch.length === 0) return
        // peers that miss it (none subscribed yet, a partition) get it through catch-up; the events are stored either way
        await pubsub.publish(eventsTopic(namespace), new TextEncoder().encode(`{"v":1,"events":[${batch.join(',')}]}`)).catch((err: unknown) => {
          this.components.log.warn({ err, namespace, events: batch.length }, 'gossiping new events failed: peers get them only through catch-up')
        })
        batch = []
        bytes = 0
      }
      for (const event of encoded) {
        if (bytes + event.length > this.gossipMessageBytes) await flush()
        batch.push(event)
        bytes += event.length + 1
      }
      await flush()
    }
  }

  /**
   * The origin's counter must never go back, or new events would reuse numbers peers already
   * hold (and they would drop them as duplicates). A node whose database is new or was lost asks
   * its peers how far its own chains got before it numbers anything.
   */
  private async recoverOwnSeq (origin: string): Promise<number> {
    const local = this.store.highestSeq(origin)
    if (local > 0) return local
    const answers = await Promise.allSettled([...this.components.peers.entries()].map(async ([peer]) => await this.sync.headsOf(peerIdFromString(peer), this.ownSeqTimeoutMs)))
    let highest = 0
    for (const answer of answers) {
      if (answer.status !== 'fulfilled') continue
      for (const head of answer.value) if (head.origin === origin) highest = Math.max(highest, head.seq)
    }
    if (highest > 0) this.components.log.warn({ seq: highest }, 'this node\'s events are on peers but not in its database: numbering continues after theirs')
    return highest
  }

  /**
   * Takes in events that arrived outside gossip and catch-up (the central database's change
   * stream): each is checked as a gossiped one would be, and stored if it verifies. The
   * certificate of an origin this node never met is asked of `certificateOf` (the central
   * database keeps the syncing nodes'), and used only if it chains to the operator CA.
   */
  async acceptRemote (events: SignedEvent[], certificateOf?: (peer: string) => Promise<string | null>): Promise<{ stored: number, skipped: number }> {
    const accepted: SignedEvent[] = []
    for (const event of events) {
      if (!this.namespaces.has(event.namespace)) continue
      let check = await this.verify(event)
      if (check === 'unknown_origin' && certificateOf != null) {
        const pem = await certificateOf(event.origin).catch((err: unknown) => {
          this.components.log.warn({ err, origin: event.origin }, 'could not look up an origin\'s certificate: its event is skipped here (catch-up from peers still brings it)')
          return null
        })
        if (pem != null) this.learnCertificate(event.origin, pem)
        check = await this.verify(event)
      }
      if (check === 'ok') accepted.push(event)
    }
    if (accepted.length > 0) await this.persist(accepted)
    return { stored: accepted.length, skipped: events.length - accepted.length }
  }

  async list (principal: Principal, query: { namespace: string, after?: string, type?: string, limit: number }): Promise<StoredEvent[]> {
    this.assertMayRead(principal, query.namespace)
    await this.ready()
    const tenant = tenantOf(principal)
    let afterLocalId: number | undefined
    if (query.after != null) {
      const cursor = EventCursor.safeParse(query.after)
      if (!cursor.success) throw new BkgError('invalid_request', 400, `cursor ${query.after.slice(0, 64)}: ${cursor.error.issues[0]?.message ?? 'invalid'}`)
      afterLocalId = /^\d+$/.test(query.after) ? Number(query.after) : await this.store.localIdOf(tenant, query.after) ?? undefined
      if (afterLocalId == null) throw new BkgError('unknown_cursor', 400, `no event ${query.after} in namespace ${query.namespace} that this token may see`)
    }
    return await this.store.list(tenant, { namespace: query.namespace, afterLocalId, type: query.type, limit: query.limit })
  }

  assertMayRead (principal: Principal, namespace: string): void {
    if (principal.kind === 'node-admin') return
    if (principal.namespace !== namespace) throw new BkgError('forbidden', 403, `this token is for namespace ${principal.namespace}, not ${namespace}`)
  }

  private assertMayPublish (principal: Principal, namespace: string): void {
    this.assertMayRead(principal, namespace)
    if (principal.role === 'reader') throw new BkgError('forbidden', 403, 'a reader token cannot publish events')
    if (!this.namespaces.has(namespace)) {
      throw new BkgError('namespace_not_certified', 403, `this node's certificate does not list namespace ${namespace}; the operator can add it with \`bkg ca sign --namespaces\``)
    }
  }

  private async validate (namespace: string, source: PeerId, message: Message): Promise<TopicValidatorResult> {
    const verdict = admissionVerdict(this.components.peers, source, message)
    if (verdict !== 'accept' || message.type !== 'signed') return TopicValidatorResult.Reject
    let events: SignedEvent[]
    try {
      events = EventGossip.parse(parseUntrustedJson(message.data, { maxBytes: MAX_EVENT_GOSSIP_BYTES })).events.map((event) => SignedEvent.parse(event))
    } catch {
      return TopicValidatorResult.Reject
    }
    // one forged or foreign event spoils the whole message: its signer sent it
    for (const event of events) {
      if (event.namespace !== namespace || event.origin !== message.from.toString()) return TopicValidatorResult.Reject
      const check = await this.verify(event)
      if (check === 'unknown_origin') {
        // an origin we never met: its certificate and the events come with the next catch-up
        this.sync.schedule(source)
        return TopicValidatorResult.Ignore
      }
      if (check !== 'ok') return TopicValidatorResult.Reject
    }
    for (const event of events) this.enqueue(event, source)
    return TopicValidatorResult.Accept
  }

  /** Checks id, signature and that the origin's certificate lists the event's namespace. */
  private async verify (event: SignedEvent): Promise<'ok' | 'unknown_origin' | 'bad'> {
    const cert = this.certificateOf(event.origin)
    if (cert == null) return 'unknown_origin'
    if (!cert.namespaces.includes(event.namespace)) return 'bad'
    const bytes = eventSigningBytes(event)
    if (eventId(bytes) !== event.id) return 'bad'
    try {
      const key = peerIdFromString(event.origin).publicKey
      if (key == null || !await key.verify(bytes, Buffer.from(event.sig, 'base64'))) return 'bad'
    } catch {
      // an origin that is no PeerId or a signature that does not parse: the sender's fault, refused like a bad signature
      return 'bad'
    }
    return 'ok'
  }

  private certificateOf (peer: string): NodeCertificate | undefined {
    if (peer === this.components.trust.own.peerId) return this.components.trust.own
    return this.components.peers.get(peer) ?? this.originCerts.get(peer)
  }

  private learnCertificate (peer: string, pem: string): void {
    if (this.certificateOf(peer) != null) return
    try {
      this.originCerts.set(peer, this.components.trust.verifyPeer(pem, peer))
    } catch (err) {
      this.components.log.debug({ peer, err: (err as Error).message }, 'origin certificate refused')
    }
  }

  private enqueue (event: SignedEvent, from: PeerId): void {
    this.clock.observe(event.hlc)
    if (this.queue.length >= this.maxQueued) {
      // bounded: the event is still on the sender, and catch-up brings it
      this.sync.schedule(from)
      return
    }
    this.queue.push({ event, from })
    // flush logs its own failures and never rejects, so the chain needs no catch
    this.flushing ??= this.flush().finally(() => { this.flushing = null })
  }

  private async flush (): Promise<void> {
    // a tick lets a burst of gossip join one transaction
    await new Promise((resolve) => setImmediate(resolve))
    while (this.queue.length > 0 && !this.stopped) {
      const batch = this.queue.splice(0, this.ingestBatch)
      try {
        const gaps = await this.persist(batch.map((item) => item.event))
        for (const { event, from } of batch) if (gaps.has(`${event.origin}\u0000${event.namespace}`)) this.sync.schedule(from)
      } catch (err) {
        this.components.log.error({ err }, `could not store ${batch.length} gossiped events; catch-up will retry`)
        for (const from of new Set(batch.map((item) => item.from.toString()))) this.sync.schedule(peerIdFromString(from))
      }
    }
  }

  /** Stores verified events; returns the chains that still have a gap. */
  private async persist (events: SignedEvent[]): Promise<Set<string>> {
    await this.ready()
    const stored = await this.store.ingest(events)
    for (const event of stored) this.emit('stored', event)
    const gaps = new Set<string>()
    for (const event of events) {
      if (this.store.head(event.origin, event.namespace) < event.seq) gaps.add(`${event.origin}\u0000${event.namespace}`)
    }
    return gaps
  }
}

/**
 * The event service, js-libp2p style: `eventService(init)(components)`. Components name only what
 * it uses (the gossipsub service, the host's stream handling, trust, admitted peers, the signing
 * key, the database), so a unit test hands it small fakes.
 */
export function eventService (init: EventServiceInit = {}): (components: EventServiceComponents) => EventService {
  return (components) => new EventService(components, init)
}

function tenantOf (principal: Principal): Tenant | null {
  return principal.kind === 'node-admin' ? null : { role: principal.role, namespace: principal.namespace }
}

/** The signed event as it travels (without this node's local id and arrival time). */
export function toWire (event: SignedEvent | StoredEvent): SignedEvent {
  const { v, id, namespace, type, payload, origin, seq, prevSeq, hlc, sig } = event
  return { v, id, namespace, type, payload, origin, seq, prevSeq, hlc, sig }
}
