import type { PeerId } from '@libp2p/interface'
import { describe, expect, it, vi } from 'vitest'
import { PeerChoice } from '../../node/llm/peer/peer-choice.ts'
import { makePeerId } from '../pubsub/fake-gossipsub.ts'

/** Peer choice: measured latency and load decide, never the order candidates come in. */

const idle = { busy: 0, total: 4, queued: 0 }

async function ids (n: number): Promise<string[]> {
  return await Promise.all(Array.from({ length: n }, async () => (await makePeerId()).toString()))
}

describe('peer choice', () => {
  it('prefers the lower measured latency, in whatever order the candidates come', async () => {
    const [near, far] = await ids(2)
    const choice = new PeerChoice()
    choice.observeRoundTrip(near, 2)
    choice.observeRoundTrip(far, 40)
    expect(choice.rank([{ peerId: far, slots: idle }, { peerId: near, slots: idle }]).map((c) => c.peerId)).toEqual([near, far])
    expect(choice.rank([{ peerId: near, slots: idle }, { peerId: far, slots: idle }]).map((c) => c.peerId)).toEqual([near, far])
  })

  it('prefers the less loaded peer at equal latency, and a free sequence over a nearer full peer', async () => {
    const [a, b] = await ids(2)
    const choice = new PeerChoice()
    choice.observeRoundTrip(a, 5)
    choice.observeRoundTrip(b, 5)
    const rank = (slotsA: typeof idle, slotsB: typeof idle): string[] => choice.rank([{ peerId: a, slots: slotsA }, { peerId: b, slots: slotsB }]).map((c) => c.peerId)
    expect(rank({ busy: 3, total: 4, queued: 0 }, { busy: 1, total: 4, queued: 0 })).toEqual([b, a])
    expect(rank({ busy: 0, total: 4, queued: 0 }, { busy: 2, total: 4, queued: 0 })).toEqual([a, b])
    // a full peer with a queue loses to a free one ten times farther away
    choice.observeRoundTrip(b, 50)
    expect(rank({ busy: 4, total: 4, queued: 2 }, { busy: 1, total: 4, queued: 0 })).toEqual([b, a])
  })

  it('counts the requests this node has in flight to a peer, until they end', async () => {
    const [a, b] = await ids(2)
    const choice = new PeerChoice()
    choice.observeRoundTrip(a, 5)
    choice.observeRoundTrip(b, 6)
    const slots = { busy: 0, total: 1, queued: 0 }
    const order = (): string[] => choice.rank([{ peerId: a, slots }, { peerId: b, slots }]).map((c) => c.peerId)
    expect(order()).toEqual([a, b])
    const end = choice.begin(a)
    expect(choice.inFlight(a)).toBe(1)
    expect(order()).toEqual([b, a])
    end()
    end()
    expect(choice.inFlight(a)).toBe(0)
    expect(order()).toEqual([a, b])
  })

  it('the time to first token, once seen, outweighs the ping; a peer only pinged gets the typical extra', async () => {
    const [a, b] = await ids(2)
    const choice = new PeerChoice()
    choice.observeRoundTrip(a, 1)
    choice.observeRoundTrip(b, 10)
    choice.observeFirstToken(a, 300)
    // a answers its pings fast but takes 300 ms to its first token: b, pinged at 10 ms, is expected at 10 + 299
    expect(choice.latencyOf(b)).toBeCloseTo(309)
    expect(choice.rank([{ peerId: a, slots: idle }, { peerId: b, slots: idle }]).map((c) => c.peerId)).toEqual([a, b])
    choice.observeFirstToken(b, 100)
    expect(choice.rank([{ peerId: a, slots: idle }, { peerId: b, slots: idle }]).map((c) => c.peerId)).toEqual([b, a])
  })

  it('probes a peer it has no round trip for (once at a time), and learns from the answer', async () => {
    const [known, unknown] = await ids(2)
    const pinged: string[] = []
    let answer: (ms: number) => void = () => {}
    const ping = vi.fn(async (peer: PeerId) => {
      pinged.push(peer.toString())
      return await new Promise<number>((resolve) => { answer = resolve })
    })
    const choice = new PeerChoice({ unknownLatencyMs: 50 }, { ping })
    choice.observeRoundTrip(known, 20)
    choice.rank([{ peerId: known, slots: idle }, { peerId: unknown, slots: idle }])
    choice.rank([{ peerId: unknown, slots: idle }])
    expect(pinged).toEqual([unknown])
    answer(3)
    await vi.waitFor(() => { expect(choice.roundTripOf(unknown)).toBe(3) })
    expect(choice.rank([{ peerId: known, slots: idle }, { peerId: unknown, slots: idle }]).map((c) => c.peerId)).toEqual([unknown, known])
  })

  it('a peer that just failed comes last, and is forgiven later', async () => {
    const [a, b] = await ids(2)
    let now = 1_000_000
    const choice = new PeerChoice({ failureMemoryMs: 30_000 }, { now: () => now })
    choice.observeRoundTrip(a, 1)
    choice.observeRoundTrip(b, 30)
    choice.observeFailure(a)
    expect(choice.rank([{ peerId: a, slots: idle }, { peerId: b, slots: idle }]).map((c) => c.peerId)).toEqual([b, a])
    now += 30_001
    expect(choice.rank([{ peerId: a, slots: idle }, { peerId: b, slots: idle }]).map((c) => c.peerId)).toEqual([a, b])
  })
})
