import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { AdmittedPeers } from '../../node/admission/index.ts'
import { roomHub, type PresenceState, type RoomHub } from '../../node/events/index.ts'
import { broadcastTopic } from '../../protocols/ids.ts'
import type { Json, RoomGossip } from '../../protocols/realtime.ts'
import { certificate, FakeGossipsub, makePeerId, signedMessage } from '../pubsub/fake-gossipsub.ts'

interface Recorded {
  broadcasts: Array<{ event: string, payload: Json, from: string }>
  presence: Array<{ joins: PresenceState, leaves: PresenceState }>
}

function listener (session: string, self = false): Recorded & { session: string, self: boolean, onBroadcast: (m: Recorded['broadcasts'][number]) => void, onPresence: (d: Recorded['presence'][number]) => void } {
  const recorded: Recorded = { broadcasts: [], presence: [] }
  return {
    ...recorded,
    session,
    self,
    onBroadcast: (message) => recorded.broadcasts.push(message),
    onPresence: (diff) => recorded.presence.push(diff)
  }
}

describe('RoomHub', () => {
  let neighbour: PeerId
  let outsider: PeerId
  let stranger: PeerId
  let gossip: FakeGossipsub
  let peers: AdmittedPeers
  let hub: RoomHub

  const gossiped = (): RoomGossip[] => gossip.published.map(({ data }) => JSON.parse(new TextDecoder().decode(data)) as RoomGossip)
  const fromMesh = (from: PeerId, message: RoomGossip, topic = broadcastTopic('lab')): void => {
    gossip.deliver(signedMessage(from, topic, JSON.stringify(message)))
  }

  beforeAll(async () => {
    [neighbour, outsider, stranger] = await Promise.all([makePeerId(), makePeerId(), makePeerId()])
  })

  beforeEach(() => {
    gossip = new FakeGossipsub()
    peers = new AdmittedPeers()
    peers.admit(neighbour, certificate(neighbour, { namespaces: ['lab'] }))
    peers.admit(outsider, certificate(outsider, { namespaces: ['other'] }))
    hub = roomHub({ presenceTtlMs: 1000, refreshIntervalMs: 100 })({ pubsub: gossip.as(), peers, namespaces: new Set(['lab']), log: { debug () {} } })
  })

  afterEach(() => {
    hub.stop()
    vi.useRealTimers()
  })

  it('subscribes the broadcast topic of each own namespace with a validator that checks the origin\'s namespaces', async () => {
    hub.start()
    expect([...gossip.subscribed]).toEqual([broadcastTopic('lab')])
    const validate = gossip.topicValidators.get(broadcastTopic('lab'))!
    const message = (from: PeerId): ReturnType<typeof signedMessage> => signedMessage(from, broadcastTopic('lab'), '{}')
    expect(await validate(neighbour, message(neighbour))).toBe(TopicValidatorResult.Accept)
    expect(await validate(outsider, message(outsider))).toBe(TopicValidatorResult.Reject)
    expect(await validate(stranger, message(stranger))).toBe(TopicValidatorResult.Reject)
    // an origin farther away is vouched for by the neighbour that relays it
    expect(await validate(neighbour, message(stranger))).toBe(TopicValidatorResult.Accept)
    hub.stop()
    expect(gossip.subscribed.size).toBe(0)
    expect(gossip.topicValidators.size).toBe(0)
  })

  it('broadcasts to the room\'s local clients (the sender only when it asked for its own) and gossips it', () => {
    const sender = listener('s1')
    const other = listener('s2')
    const echo = listener('s3', true)
    const elsewhere = listener('s4')
    hub.join('lab', 'lobby', sender)
    hub.join('lab', 'lobby', other)
    const { leave } = hub.join('lab', 'lobby', echo)
    hub.join('lab', 'kitchen', elsewhere)

    hub.broadcast('lab', 'lobby', 's1', 'ping', { n: 1 })
    expect(sender.broadcasts).toEqual([])
    expect(other.broadcasts).toEqual([{ event: 'ping', payload: { n: 1 }, from: 's1' }])
    expect(elsewhere.broadcasts).toEqual([])
    hub.broadcast('lab', 'lobby', 's3', 'pong', null)
    expect(echo.broadcasts).toEqual([{ event: 'ping', payload: { n: 1 }, from: 's1' }, { event: 'pong', payload: null, from: 's3' }])
    expect(other.broadcasts).toHaveLength(2)
    expect(gossiped()).toEqual([
      { v: 1, kind: 'broadcast', namespace: 'lab', room: 'lobby', event: 'ping', payload: { n: 1 } },
      { v: 1, kind: 'broadcast', namespace: 'lab', room: 'lobby', event: 'pong', payload: null }
    ])
    expect(gossip.published.every(({ topic }) => topic === broadcastTopic('lab'))).toBe(true)

    leave()
    hub.broadcast('lab', 'lobby', 's1', 'after', 1)
    expect(echo.broadcasts).toHaveLength(2)
    expect(other.broadcasts).toHaveLength(3)

    // a namespace this node is not certified for is served locally but never gossiped
    const foreign = listener('s5')
    hub.join('other', 'lobby', foreign)
    hub.broadcast('other', 'lobby', 's6', 'hi', 'there')
    expect(foreign.broadcasts).toEqual([{ event: 'hi', payload: 'there', from: 's6' }])
    expect(gossip.published).toHaveLength(3)
  })

  it('tells the room\'s clients the presence diff on track and untrack, and gossips the node\'s state', () => {
    const watcher = listener('w')
    expect(hub.join('lab', 'lobby', watcher).presence).toEqual({})

    hub.track('lab', 'lobby', 's1', 'alice', { device: 'phone' })
    hub.track('lab', 'lobby', 's2', 'alice', { device: 'laptop' })
    hub.track('lab', 'lobby', 's1', 'alice', null)
    hub.track('lab', 'lobby', 's2', 'alice', null)

    expect(watcher.presence).toEqual([
      { joins: { alice: [{ device: 'phone' }] }, leaves: {} },
      { joins: { alice: [{ device: 'phone' }, { device: 'laptop' }] }, leaves: { alice: [{ device: 'phone' }] } },
      { joins: { alice: [{ device: 'laptop' }] }, leaves: { alice: [{ device: 'phone' }, { device: 'laptop' }] } },
      { joins: {}, leaves: { alice: [{ device: 'laptop' }] } }
    ])
    expect(gossiped().map((message) => message.kind === 'presence' ? message.state : null)).toEqual([
      { alice: [{ device: 'phone' }] },
      { alice: [{ device: 'phone' }, { device: 'laptop' }] },
      { alice: [{ device: 'laptop' }] },
      {}
    ])
    expect(hub.join('lab', 'lobby', listener('late')).presence).toEqual({})
  })

  it('merges presence gossiped by other nodes and drops it when not refreshed within the TTL', async () => {
    vi.useFakeTimers()
    hub.start()
    const watcher = listener('w')
    hub.join('lab', 'lobby', watcher)
    hub.track('lab', 'lobby', 'w', 'alice', { here: true })

    fromMesh(neighbour, { v: 1, kind: 'presence', namespace: 'lab', room: 'lobby', state: { bob: [{ there: true }] } })
    expect(watcher.presence.at(-1)).toEqual({ joins: { bob: [{ there: true }] }, leaves: {} })
    expect(hub.join('lab', 'lobby', listener('late')).presence).toEqual({ alice: [{ here: true }], bob: [{ there: true }] })

    // a refresh within the TTL keeps it
    await vi.advanceTimersByTimeAsync(800)
    fromMesh(neighbour, { v: 1, kind: 'presence', namespace: 'lab', room: 'lobby', state: { bob: [{ there: true }] } })
    await vi.advanceTimersByTimeAsync(800)
    expect(watcher.presence).toHaveLength(2)

    // silence past the TTL drops it
    await vi.advanceTimersByTimeAsync(300)
    expect(watcher.presence.at(-1)).toEqual({ joins: {}, leaves: { bob: [{ there: true }] } })
    expect(hub.join('lab', 'lobby', listener('later')).presence).toEqual({ alice: [{ here: true }] })
    // meanwhile this node re-sent its own presence on every refresh
    const refreshes = gossiped().filter((message) => message.kind === 'presence')
    expect(refreshes.length).toBeGreaterThan(10)
    expect(refreshes.at(-1)).toEqual({ v: 1, kind: 'presence', namespace: 'lab', room: 'lobby', state: { alice: [{ here: true }] } })
  })

  it('an empty presence state from a node removes it at once', () => {
    hub.start()
    const watcher = listener('w')
    hub.join('lab', 'lobby', watcher)
    fromMesh(neighbour, { v: 1, kind: 'presence', namespace: 'lab', room: 'lobby', state: { bob: [1] } })
    fromMesh(neighbour, { v: 1, kind: 'presence', namespace: 'lab', room: 'lobby', state: {} })
    expect(watcher.presence).toEqual([{ joins: { bob: [1] }, leaves: {} }, { joins: {}, leaves: { bob: [1] } }])
  })

  it('delivers broadcasts from the mesh, and ignores gossip whose namespace is not its topic\'s, malformed or unsigned', () => {
    hub.start()
    const client = listener('c')
    hub.join('lab', 'lobby', client)

    fromMesh(neighbour, { v: 1, kind: 'broadcast', namespace: 'lab', room: 'lobby', event: 'e', payload: { ok: true } })
    expect(client.broadcasts).toEqual([{ event: 'e', payload: { ok: true }, from: neighbour.toString() }])

    // namespace 'lab' claimed on another namespace's topic, and the reverse
    fromMesh(neighbour, { v: 1, kind: 'broadcast', namespace: 'lab', room: 'lobby', event: 'x', payload: 1 }, broadcastTopic('other'))
    fromMesh(neighbour, { v: 1, kind: 'presence', namespace: 'other', room: 'lobby', state: { eve: [1] } })
    gossip.deliver(signedMessage(neighbour, broadcastTopic('lab'), '{"v":1,"kind":"broadcast"'))
    gossip.deliver(signedMessage(neighbour, broadcastTopic('lab'), JSON.stringify({ v: 2, kind: 'broadcast', namespace: 'lab', room: 'lobby', event: 'x', payload: 1 })))
    gossip.deliver({ type: 'unsigned', topic: broadcastTopic('lab'), data: new TextEncoder().encode(JSON.stringify({ v: 1, kind: 'broadcast', namespace: 'lab', room: 'lobby', event: 'x', payload: 1 })) })
    expect(client.broadcasts).toHaveLength(1)
    expect(client.presence).toEqual([])

    hub.stop()
    fromMesh(neighbour, { v: 1, kind: 'broadcast', namespace: 'lab', room: 'lobby', event: 'late', payload: 1 })
    expect(client.broadcasts).toHaveLength(1)
  })

  it('tracks no more rooms than init.maxRooms', () => {
    const small = roomHub({ maxRooms: 1 })({ pubsub: gossip.as(), peers, namespaces: new Set(['lab']), log: { debug () {} } })
    small.join('lab', 'first', listener('a'))
    // a join past the limit is refused as a 429, not a crash
    expect(() => small.join('lab', 'second', listener('b'))).toThrow(expect.objectContaining({ code: 'too_many_rooms', status: 429 }))
    small.track('lab', 'second', 'a', 'alice', { x: 1 })
    expect(gossip.published).toEqual([])
    small.track('lab', 'first', 'a', 'alice', { x: 1 })
    expect(gossiped()).toEqual([{ v: 1, kind: 'presence', namespace: 'lab', room: 'first', state: { alice: [{ x: 1 }] } }])
  })

  it('a failed gossip publish is logged, not thrown', async () => {
    const logged: unknown[] = []
    gossip.publishError = new Error('NoPeersSubscribedToTopic')
    const quiet = roomHub()({ pubsub: gossip.as(), peers, namespaces: new Set(['lab']), log: { debug: (fields: unknown) => { logged.push(fields) } } })
    const client = listener('c')
    quiet.join('lab', 'lobby', client)
    expect(() => { quiet.broadcast('lab', 'lobby', 'x', 'e', 1) }).not.toThrow()
    expect(client.broadcasts).toHaveLength(1)
    await new Promise((resolve) => setImmediate(resolve))
    expect(logged).toEqual([{ err: gossip.publishError }])
  })
})
