import type { AbortOptions, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import type { Slots } from './announcements.ts'

export interface PeerChoiceInit {
  /** weight of a new sample in the moving averages (EWMA) of round trip and time to first token */
  alpha?: number
  /** assumed for a peer never measured, while a ping measures it */
  unknownLatencyMs?: number
  /** what waiting for a sequence to free up costs, per request ahead per sequence: about one short request */
  slotWaitMs?: number
  /** added to a peer's score for a while after a request to it failed */
  failurePenaltyMs?: number
  failureMemoryMs?: number
  /** a round trip older than this is measured again when the peer is ranked */
  reprobeMs?: number
  probeTimeoutMs?: number
}

export interface PeerChoiceComponents {
  /** libp2p's ping (`host.services.ping.ping`): the round trip to a peer, in ms */
  ping?: (peer: PeerId, options?: AbortOptions) => Promise<number>
  log?: Pick<Logger, 'debug'>
  now?: () => number
}

export interface Candidate {
  peerId: string
  slots: Slots
}

interface PeerStats {
  rttMs: number | null
  rttAt: number
  firstTokenMs: number | null
  failedAt: number
  inFlight: number
}

export const PEER_CHOICE_DEFAULTS = {
  alpha: 0.3,
  unknownLatencyMs: 50,
  slotWaitMs: 2_000,
  failurePenaltyMs: 10_000,
  failureMemoryMs: 30_000,
  reprobeMs: 60_000,
  probeTimeoutMs: 5_000
} satisfies Required<PeerChoiceInit>

/**
 * Ranks the peers that announce a model by what a request sent now should cost until its first
 * token, from what this node measured (not by a fixed order):
 *
 *   latency = EWMA of the time to first token seen from that peer, when there is one;
 *             else EWMA of its ping round trip plus the mean (first token − round trip) over the
 *             peers where both are known (what a peer adds to the network: queueing and reading
 *             the prompt), else `unknownLatencyMs` while a ping is sent to learn it
 *   ahead   = busy + queued (its last announcement) + mine (requests this node has in flight to
 *             it, which that announcement may not count yet: at worst counted twice for an
 *             interval, which errs towards spreading the load)
 *   load    = ahead / total
 *   wait    = slotWaitMs × max(0, ahead + 1 − total) / total
 *   score   = latency × (1 + load) + wait (+ failurePenaltyMs for a peer that failed lately)
 *
 * Why: sequences of one model share its evaluation steps (continuous batching), so each request a
 * peer already runs slows the next one roughly in proportion (the `1 + load` factor); when no
 * sequence is free the request queues and waits about a request's length per round, which this
 * node cannot know, so `slotWaitMs` stands for it (a few seconds: a short CPU chat): a peer with a
 * free sequence beats a full one unless it is that much farther away. A peer that just failed is
 * tried last rather than never, as its failure may have been the request's. Equal scores are
 * ordered at random, so that nodes which know nothing yet do not all pick the same peer.
 */
export class PeerChoice {
  private readonly init: Required<PeerChoiceInit>
  private readonly deps: PeerChoiceComponents
  private readonly now: () => number
  private readonly stats = new Map<string, PeerStats>()
  private readonly probing = new Set<string>()

  constructor (init: PeerChoiceInit = {}, components: PeerChoiceComponents = {}) {
    this.init = { ...PEER_CHOICE_DEFAULTS, ...init }
    this.deps = components
    this.now = components.now ?? Date.now
  }

  /** Candidates, best first; peers with no fresh round trip are probed for next time. */
  rank<C extends Candidate> (candidates: C[]): Array<C & { score: number }> {
    const scored = candidates.map((candidate) => ({ ...candidate, score: this.score(candidate), tie: Math.random() }))
    for (const candidate of candidates) this.maybeProbe(candidate.peerId)
    scored.sort((a, b) => a.score - b.score || a.tie - b.tie)
    return scored.map(({ tie: _tie, ...candidate }) => candidate as C & { score: number })
  }

  score (candidate: Candidate): number {
    const stats = this.stats.get(candidate.peerId)
    const total = Math.max(1, candidate.slots.total)
    const ahead = candidate.slots.busy + candidate.slots.queued + (stats?.inFlight ?? 0)
    const wait = this.init.slotWaitMs * Math.max(0, ahead + 1 - total) / total
    const failed = stats != null && this.now() - stats.failedAt < this.init.failureMemoryMs
    return this.latencyOf(candidate.peerId) * (1 + ahead / total) + wait + (failed ? this.init.failurePenaltyMs : 0)
  }

  /** The expected time to first token without load (see the class comment). */
  latencyOf (peer: string): number {
    const stats = this.stats.get(peer)
    if (stats?.firstTokenMs != null) return stats.firstTokenMs
    if (stats?.rttMs != null) return stats.rttMs + this.meanExtraMs()
    return this.init.unknownLatencyMs
  }

  /** the measured round trip, when there is one */
  roundTripOf (peer: string): number | null {
    return this.stats.get(peer)?.rttMs ?? null
  }

  observeRoundTrip (peer: string, ms: number): void {
    const stats = this.statsOf(peer)
    stats.rttMs = this.average(stats.rttMs, ms)
    stats.rttAt = this.now()
  }

  observeFirstToken (peer: string, ms: number): void {
    const stats = this.statsOf(peer)
    stats.firstTokenMs = this.average(stats.firstTokenMs, ms)
  }

  observeFailure (peer: string): void {
    this.statsOf(peer).failedAt = this.now()
  }

  /** A request to `peer` begins; the returned function ends it. */
  begin (peer: string): () => void {
    const stats = this.statsOf(peer)
    stats.inFlight++
    let ended = false
    return () => {
      if (ended) return
      ended = true
      stats.inFlight--
    }
  }

  inFlight (peer: string): number {
    return this.stats.get(peer)?.inFlight ?? 0
  }

  /** Forgets a peer's measurements (it disconnected: its next connection may take another path). */
  forget (peer: string): void {
    if (this.stats.get(peer)?.inFlight === 0) this.stats.delete(peer)
  }

  /** Measures the round trip to `peer` now (also what rank() does for peers without a fresh one). */
  async probe (peer: string): Promise<void> {
    if (this.deps.ping == null || this.probing.has(peer)) return
    this.probing.add(peer)
    try {
      this.observeRoundTrip(peer, await this.deps.ping(peerIdFromString(peer), { signal: AbortSignal.timeout(this.init.probeTimeoutMs) }))
    } catch (err) {
      this.deps.log?.debug({ peer, err: (err as Error).message }, 'pinging an inference peer failed')
      this.observeFailure(peer)
    } finally {
      this.probing.delete(peer)
    }
  }

  private maybeProbe (peer: string): void {
    const stats = this.stats.get(peer)
    if (stats?.rttMs != null && this.now() - stats.rttAt < this.init.reprobeMs) return
    void this.probe(peer)
  }

  private meanExtraMs (): number {
    let sum = 0
    let n = 0
    for (const stats of this.stats.values()) {
      if (stats.firstTokenMs == null || stats.rttMs == null) continue
      sum += Math.max(0, stats.firstTokenMs - stats.rttMs)
      n++
    }
    return n === 0 ? 0 : sum / n
  }

  private average (previous: number | null, sample: number): number {
    return previous == null ? sample : previous + this.init.alpha * (sample - previous)
  }

  private statsOf (peer: string): PeerStats {
    let stats = this.stats.get(peer)
    if (stats == null) {
      stats = { rttMs: null, rttAt: 0, firstTokenMs: null, failedAt: -Infinity, inFlight: 0 }
      this.stats.set(peer, stats)
    }
    return stats
  }
}
