import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import pino from 'pino'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { NodeCertificate } from '../../ca/index.ts'
import { AdmittedPeers } from '../../node/admission/index.ts'
import type { Principal } from '../../node/auth/index.ts'
import { database, type Database } from '../../node/db/index.ts'
import { defaultCacheDir } from '../../node/config/index.ts'
import { eventService, type EventService, type EventServiceComponents, type EventServiceInit, type StoredEvent } from '../../node/events/index.ts'
import { eventId, eventSigningBytes, formatHlc, SignedEvent, type UnsignedEvent } from '../../protocols/events.ts'
import { EVENTS_SYNC_PROTOCOL, eventsTopic } from '../../protocols/ids.ts'
import { tempDir } from '../helpers/mesh.ts'
import { certificate, FakeGossipsub, signedMessage } from '../pubsub/fake-gossipsub.ts'
import { startAll, stopAll } from '../../lib/startable.ts'
import { refusalOf } from '../helpers/refusal.ts'

/**
 * The event service on a real embedded database (PGlite, restored from the template that
 * test/global-setup.ts builds) and fake components: gossipsub in memory, the host's stream
 * handling recorded, trust answering with this node's certificate.
 */

const log = pino({ level: 'silent' })

/** the host's stream handling as the service sees it: handlers recorded, dials refused (no peer answers) */
class FakeStreams {
  readonly handled = new Map<string, unknown>()
  dials = 0

  async handle (protocol: string, handler: unknown, _options?: unknown): Promise<void> {
    this.handled.set(protocol, handler)
  }

  async unhandle (protocol: string): Promise<void> {
    this.handled.delete(protocol)
  }

  async dialProtocol (): Promise<never> {
    this.dials++
    throw new Error('no such peer in this test')
  }
}

const token = (role: Principal['role'], namespace: string): Principal => ({ kind: 'namespace', role, namespace, tokenId: `tok-${role}-${namespace}`, expiresAt: null })
const nodeAdmin: Principal = { kind: 'node-admin', role: 'admin', namespace: '*', tokenId: 'admin', expiresAt: null }

async function signEvent (key: PrivateKey, fields: Pick<UnsignedEvent, 'namespace' | 'type' | 'payload' | 'seq' | 'prevSeq'>): Promise<SignedEvent> {
  const unsigned: UnsignedEvent = { v: 1, origin: peerIdFromPrivateKey(key).toString(), hlc: formatHlc(Date.now(), 0), ...fields }
  const bytes = eventSigningBytes(unsigned)
  return { ...unsigned, id: eventId(bytes), sig: Buffer.from(await key.sign(bytes)).toString('base64') }
}

const gossipBytes = (events: SignedEvent[]): string => JSON.stringify({ v: 1, events })

async function until (check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe('event service on fake components and a real database', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: Database
  let selfKey: PrivateKey
  let self: PeerId
  let aliceKey: PrivateKey
  let alice: PeerId
  let bobKey: PrivateKey
  let bob: PeerId
  let gossip: FakeGossipsub
  let streams: FakeStreams
  let peers: AdmittedPeers
  let own: NodeCertificate
  let service: EventService | undefined

  function build (init: EventServiceInit = {}): { events: EventService, stored: StoredEvent[] } {
    const components: EventServiceComponents = {
      peerId: self,
      pubsub: gossip.as(),
      streams: streams as unknown as EventServiceComponents['streams'],
      trust: { own, verifyPeer: () => { throw new Error('no CA in this test') } },
      peers,
      privateKey: selfKey,
      db,
      log
    }
    const events = service = eventService(init)(components)
    const stored: StoredEvent[] = []
    events.on('stored', (event) => stored.push(event))
    return { events, stored }
  }

  beforeAll(async () => {
    tmp = await tempDir()
    db = database({ dir: join(tmp.dir, 'db'), templateDir: defaultCacheDir() })({ log })
    ;[selfKey, aliceKey, bobKey] = await Promise.all([generateKeyPair('Ed25519'), generateKeyPair('Ed25519'), generateKeyPair('Ed25519')])
    ;[self, alice, bob] = [selfKey, aliceKey, bobKey].map((key) => peerIdFromPrivateKey(key))
  }, 60_000)

  beforeEach(() => {
    gossip = new FakeGossipsub()
    streams = new FakeStreams()
    peers = new AdmittedPeers()
    own = certificate(self, { namespaces: ['lab', 'ops'] })
  })

  afterEach(async () => {
    if (service != null) await stopAll([['events', service]])
    service = undefined
  })

  afterAll(async () => {
    await db?.stop()
    await tmp?.remove()
  })

  it('start joins the certified namespaces\' topics and serves catch-up; stop leaves them', async () => {
    const { events } = build()
    await startAll([['events', events]])
    expect([...gossip.subscribed].sort()).toEqual([eventsTopic('lab'), eventsTopic('ops')].sort())
    expect([...gossip.topicValidators.keys()].sort()).toEqual([eventsTopic('lab'), eventsTopic('ops')].sort())
    expect(streams.handled.has(EVENTS_SYNC_PROTOCOL)).toBe(true)
    expect(events.certifiedNamespaces).toEqual(new Set(['lab', 'ops']))
    await stopAll([['events', events]])
    service = undefined
    expect(gossip.subscribed.size).toBe(0)
    expect(gossip.topicValidators.size).toBe(0)
    expect(streams.handled.size).toBe(0)
  })

  it('publish refuses reader tokens, other namespaces\' tokens and namespaces this node is not certified for', async () => {
    const { events, stored } = build()
    await startAll([['events', events]])
    const input = (namespace: string): Array<{ namespace: string, type: string, payload: { n: number } }> => [{ namespace, type: 'refused', payload: { n: 1 } }]
    expect(await refusalOf(events.publish(token('reader', 'lab'), input('lab')))).toEqual({ code: 'forbidden', status: 403 })
    expect(await refusalOf(events.publish(token('writer', 'ops'), input('lab')))).toEqual({ code: 'forbidden', status: 403 })
    expect(await refusalOf(events.publish(token('writer', 'elsewhere'), input('elsewhere')))).toEqual({ code: 'namespace_not_certified', status: 403 })
    expect(await refusalOf(events.publish(nodeAdmin, input('elsewhere')))).toEqual({ code: 'namespace_not_certified', status: 403 })
    expect(gossip.published).toEqual([])
    expect(stored).toEqual([])
    expect(await events.list(nodeAdmin, { namespace: 'lab', type: 'refused', limit: 10 })).toEqual([])
  })

  it('publish signs, stores, emits `stored` and gossips the events on the namespace topic', async () => {
    const { events, stored } = build()
    await startAll([['events', events]])
    const published = await events.publish(token('writer', 'lab'), [
      { namespace: 'lab', type: 'reading', payload: { t: 21.5 } },
      { namespace: 'lab', type: 'reading', payload: { t: 22 } }
    ])
    expect(published.map((event) => event.payload)).toEqual([{ t: 21.5 }, { t: 22 }])
    expect(published.every((event) => event.origin === self.toString())).toBe(true)
    const [first, second] = published
    expect(second.seq).toBe(first.seq + 1)
    expect(second.prevSeq).toBe(first.seq)
    // the signature is this node's over the event's signing bytes
    for (const event of published) {
      const bytes = eventSigningBytes(event)
      expect(eventId(bytes)).toBe(event.id)
      expect(await self.publicKey!.verify(bytes, Buffer.from(event.sig, 'base64'))).toBe(true)
    }
    expect(stored.map((event) => event.id)).toEqual(published.map((event) => event.id))
    expect((await events.list(token('reader', 'lab'), { namespace: 'lab', type: 'reading', limit: 10 })).map((event) => event.id))
      .toEqual(published.map((event) => event.id))

    expect(gossip.published).toHaveLength(1)
    expect(gossip.published[0].topic).toBe(eventsTopic('lab'))
    const message = JSON.parse(new TextDecoder().decode(gossip.published[0].data)) as { v: number, events: unknown[] }
    expect(message.v).toBe(1)
    expect(message.events.map((event) => SignedEvent.parse(event).id)).toEqual(published.map((event) => event.id))
    // the wire form leaves out this node's local id and arrival time
    expect(message.events[0]).not.toHaveProperty('localId')
  })

  it('packs gossip into messages of at most gossipMessageBytes, and a failed gossip still stores', async () => {
    const { events } = build({ gossipMessageBytes: 600 })
    await startAll([['events', events]])
    const inputs = [1, 2, 3].map((n) => ({ namespace: 'ops', type: 'packed', payload: { n } }))
    const published = await events.publish(token('writer', 'ops'), inputs)
    // one signed event is about 300 bytes of JSON: no two fit in 600
    expect(gossip.published.length).toBe(3)
    const wrapper = '{"v":1,"events":[]}'.length
    expect(gossip.published.every((message) => message.topic === eventsTopic('ops') && message.data.length <= 600 + wrapper)).toBe(true)
    const sent = gossip.published.flatMap((message) => (JSON.parse(new TextDecoder().decode(message.data)) as { events: SignedEvent[] }).events.map((event) => event.id))
    expect(sent).toEqual(published.map((event) => event.id))

    gossip.publishError = new Error('no peers subscribed')
    const more = await events.publish(token('writer', 'ops'), [{ namespace: 'ops', type: 'packed', payload: { n: 4 } }])
    expect(more[0].seq).toBe(published[2].seq + 1)
    expect((await events.list(nodeAdmin, { namespace: 'ops', type: 'packed', limit: 10 })).map((event) => event.payload)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }])
  })

  it('the validator rejects an event from an origin not certified for the namespace, and accepts and stores a certified one', async () => {
    peers.admit(alice, certificate(alice, { namespaces: ['ops'] }))
    peers.admit(bob, certificate(bob, { namespaces: ['lab'] }))
    const { events, stored } = build()
    await startAll([['events', events]])
    const validate = gossip.topicValidators.get(eventsTopic('lab'))!

    const foreign = await signEvent(aliceKey, { namespace: 'lab', type: 'gossiped', payload: { from: 'alice' }, seq: 1, prevSeq: 0 })
    expect(await validate(alice, signedMessage(alice, eventsTopic('lab'), gossipBytes([foreign])))).toBe(TopicValidatorResult.Reject)

    // a certified origin's event relayed under another sender's name
    const bobs = await signEvent(bobKey, { namespace: 'lab', type: 'gossiped', payload: { from: 'bob' }, seq: 1, prevSeq: 0 })
    expect(await validate(alice, signedMessage(alice, eventsTopic('lab'), gossipBytes([bobs])))).toBe(TopicValidatorResult.Reject)
    // a forged signature
    expect(await validate(bob, signedMessage(bob, eventsTopic('lab'), gossipBytes([{ ...bobs, sig: foreign.sig }])))).toBe(TopicValidatorResult.Reject)

    expect(await validate(bob, signedMessage(bob, eventsTopic('lab'), gossipBytes([bobs])))).toBe(TopicValidatorResult.Accept)
    await until(() => stored.length === 1)
    expect(stored[0].id).toBe(bobs.id)
    const listed = await events.list(nodeAdmin, { namespace: 'lab', type: 'gossiped', limit: 10 })
    expect(listed.map((event) => [event.origin, event.payload])).toEqual([[bob.toString(), { from: 'bob' }]])
  })

  it('list pages with a cursor (event id or local id) and refuses unknown or malformed cursors', async () => {
    const { events } = build()
    await startAll([['events', events]])
    const published = await events.publish(token('writer', 'lab'), [1, 2, 3, 4].map((n) => ({ namespace: 'lab', type: 'paged', payload: { n } })))
    const page = async (after?: string, limit = 2): Promise<unknown[]> =>
      (await events.list(token('reader', 'lab'), { namespace: 'lab', type: 'paged', after, limit })).map((event) => event.payload)
    expect(await page()).toEqual([{ n: 1 }, { n: 2 }])
    expect(await page(published[1].id)).toEqual([{ n: 3 }, { n: 4 }])
    expect(await page(String(published[2].localId))).toEqual([{ n: 4 }])
    expect(await page(published[3].id)).toEqual([])
    expect(await refusalOf(page('e'.repeat(22)))).toEqual({ code: 'unknown_cursor', status: 400 })
    expect(await refusalOf(page('not a cursor!'))).toEqual({ code: 'invalid_request', status: 400 })
    expect(await refusalOf(events.list(token('reader', 'ops'), { namespace: 'lab', limit: 1 }))).toEqual({ code: 'forbidden', status: 403 })
  })
})
