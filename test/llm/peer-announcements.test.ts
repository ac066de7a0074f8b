import { EventEmitter } from 'node:events'
import type { PeerId } from '@libp2p/interface'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { LLM_TOPIC } from '../../protocols/ids.ts'
import { MAX_ANNOUNCEMENT_BYTES, type LlmAnnouncement } from '../../protocols/infer.ts'
import { llmAnnouncements, type LlmAnnouncements, type LocalLlmState } from '../../node/llm/peer/announcements.ts'
import { FakeGossipsub, makePeerId, signedMessage } from '../pubsub/fake-gossipsub.ts'
import { log, MODEL, SHA } from './peer-fakes.ts'

/** Announcements on LLM_TOPIC: what this node says, and which of its peers' announcements it believes. */

class FakePeers extends EventEmitter<{ removed: [peer: string] }> {
  readonly admitted = new Set<string>()
  isAdmitted (peer: PeerId | string): boolean {
    return this.admitted.has(peer.toString())
  }

  denial (): undefined {
    return undefined
  }

  drop (peer: string): void {
    this.admitted.delete(peer)
    this.emit('removed', peer)
  }
}

const running: LlmAnnouncements[] = []
afterEach(() => {
  for (const service of running.splice(0)) {
    service.beforeStop()
    service.stop()
  }
})

async function setup (state: () => LocalLlmState = () => ({ models: [], slots: { busy: 0, total: 0, queued: 0 } })) {
  const self = await makePeerId()
  const gossip = new FakeGossipsub()
  const peers = new FakePeers()
  let now = 1_000_000
  const service = llmAnnouncements({ intervalMs: 1000, debounceMs: 5, state })({
    peerId: self, pubsub: gossip.as(), peers: peers as never, log, now: () => now
  })
  service.start()
  service.afterStart()
  running.push(service)
  const validate = async (source: PeerId, data: Uint8Array | string, from: PeerId = source): Promise<TopicValidatorResult> =>
    await gossip.topicValidators.get(LLM_TOPIC)!(source, signedMessage(from, LLM_TOPIC, data))
  return { self, gossip, peers, service, validate, advance: (ms: number) => { now += ms } }
}

function announcement (peerId: PeerId, extra: Partial<LlmAnnouncement> = {}): string {
  return JSON.stringify({ v: 1, peerId: peerId.toString(), models: [{ id: MODEL, sha256: SHA }], slots: { busy: 1, total: 4, queued: 0 }, at: 1, ...extra })
}

describe('llm announcements', () => {
  it('keeps an admitted peer\'s own announcement and offers it as a candidate', async () => {
    const { peers, service, validate } = await setup()
    const peer = await makePeerId()
    peers.admitted.add(peer.toString())

    expect(await validate(peer, announcement(peer, { models: [{ id: MODEL, sha256: SHA, slots: { busy: 0, total: 2, queued: 0 } }] }))).toBe(TopicValidatorResult.Accept)

    expect(service.candidates(MODEL)).toEqual([{ peerId: peer.toString(), sha256: SHA, slots: { busy: 0, total: 2, queued: 0 }, receivedAt: 1_000_000 }])
    expect(service.candidates('other@1.0.0')).toEqual([])
  })

  it('refuses an announcement whose sender is not the peer it names, a malformed one and an oversized one', async () => {
    const { peers, service, validate } = await setup()
    const [peer, other] = [await makePeerId(), await makePeerId()]
    peers.admitted.add(peer.toString())
    peers.admitted.add(other.toString())

    // signed by `peer`, claims to be `other`
    expect(await validate(peer, announcement(other))).toBe(TopicValidatorResult.Reject)
    expect(await validate(peer, '{"v":1,"peerId":')).toBe(TopicValidatorResult.Reject)
    expect(await validate(peer, announcement(peer, { slots: { busy: -1, total: 4, queued: 0 } }))).toBe(TopicValidatorResult.Reject)
    expect(await validate(peer, JSON.stringify({ ...JSON.parse(announcement(peer)), extra: true }))).toBe(TopicValidatorResult.Reject)
    const many = Array.from({ length: 65 }, (_, i) => ({ id: `m${i}@1.0.0`, sha256: SHA }))
    expect(await validate(peer, announcement(peer, { models: many }))).toBe(TopicValidatorResult.Reject)
    const padded = announcement(peer).replace('"v":1', `"v":1${' '.repeat(MAX_ANNOUNCEMENT_BYTES)}`)
    expect(await validate(peer, padded)).toBe(TopicValidatorResult.Reject)
    expect(service.candidates(MODEL)).toEqual([])
  })

  it('ignores a sender it has no admitted connection to, and refuses a non-admitted relay', async () => {
    const { peers, service, validate } = await setup()
    const [relay, stranger] = [await makePeerId(), await makePeerId()]
    peers.admitted.add(relay.toString())
    expect(await validate(relay, announcement(stranger), stranger)).toBe(TopicValidatorResult.Ignore)
    expect(await validate(stranger, announcement(stranger))).toBe(TopicValidatorResult.Reject)
    expect(service.candidates(MODEL)).toEqual([])
  })

  it('keeps the newest announcement of a peer, expires it after three intervals, drops it on disconnect', async () => {
    const { peers, service, validate, advance } = await setup()
    const peer = await makePeerId()
    peers.admitted.add(peer.toString())
    await validate(peer, announcement(peer, { at: 10, slots: { busy: 2, total: 4, queued: 0 } }))
    expect(await validate(peer, announcement(peer, { at: 9, slots: { busy: 0, total: 4, queued: 0 } }))).toBe(TopicValidatorResult.Ignore)
    expect(service.candidates(MODEL)[0].slots.busy).toBe(2)

    advance(2999)
    expect(service.candidates(MODEL)).toHaveLength(1)
    advance(2)
    expect(service.candidates(MODEL)).toEqual([])

    await validate(peer, announcement(peer, { at: 11 }))
    expect(service.candidates(MODEL)).toHaveLength(1)
    peers.drop(peer.toString())
    expect(service.candidates(MODEL)).toEqual([])
  })

  it('announces its loaded models on start and soon after a change; says once that it has none left', async () => {
    let state: LocalLlmState = { models: [{ id: MODEL, sha256: SHA }], slots: { busy: 0, total: 2, queued: 0 } }
    const { self, gossip, service } = await setup(() => state)
    const sent = (): Array<Record<string, unknown>> => gossip.published.map((m) => JSON.parse(new TextDecoder().decode(m.data)))

    await vi.waitFor(() => { expect(sent()).toHaveLength(1) })
    expect(gossip.subscribed.has(LLM_TOPIC)).toBe(true)
    expect(sent()[0]).toMatchObject({ v: 1, peerId: self.toString(), models: [{ id: MODEL, sha256: SHA }], slots: { busy: 0, total: 2, queued: 0 } })

    state = { ...state, slots: { busy: 1, total: 2, queued: 0 } }
    service.changed()
    service.changed()
    await vi.waitFor(() => { expect(sent()).toHaveLength(2) })
    expect(sent()[1].slots).toEqual({ busy: 1, total: 2, queued: 0 })
    expect(sent()[1].at as number).toBeGreaterThan(sent()[0].at as number)

    state = { models: [], slots: { busy: 0, total: 0, queued: 0 } }
    await service.publish()
    await service.publish()
    expect(sent()).toHaveLength(3)
    expect(sent()[2].models).toEqual([])

    service.beforeStop()
    expect(gossip.subscribed.has(LLM_TOPIC)).toBe(false)
    expect(gossip.topicValidators.has(LLM_TOPIC)).toBe(false)
  })

  it('leaves out models that do not fit in 8 KiB rather than send an announcement peers refuse', async () => {
    const long = (i: number): string => `${'m'.repeat(60)}${String(i).padStart(3, '0')}@1.0.0-${'r'.repeat(50)}`
    const state: LocalLlmState = { models: Array.from({ length: 64 }, (_, i) => ({ id: long(i), sha256: SHA })), slots: { busy: 0, total: 64, queued: 0 } }
    const { gossip } = await setup(() => state)
    await vi.waitFor(() => { expect(gossip.published).toHaveLength(1) })
    const bytes = gossip.published[0].data
    expect(bytes.byteLength).toBeLessThanOrEqual(MAX_ANNOUNCEMENT_BYTES)
    const models = JSON.parse(new TextDecoder().decode(bytes)).models
    expect(models.length).toBeGreaterThan(10)
    expect(models.length).toBeLessThan(64)
  })
})
