import type { GossipSub, Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import { LLM_TOPIC } from '../../../protocols/ids.ts'
import { decodeAnnouncement, encodeAnnouncement, InferFrameError, type LlmAnnouncement } from '../../../protocols/infer.ts'
import { UntrustedJsonError } from '../../../protocols/untrusted-json.ts'
import type { AdmittedPeers } from '../../admission/index.ts'
import { admissionVerdict, toValidatorResult, type GossipVerdict } from '../../pubsub/index.ts'
import type { ModelId } from '../types.ts'

export interface Slots {
  busy: number
  total: number
  queued: number
}

/** What this node announces: its loaded models (with their own slots when it has them) and its slots in all. */
export interface LocalLlmState {
  models: Array<{ id: ModelId, sha256: string, slots?: Slots }>
  slots: Slots
}

export interface LlmAnnouncementsInit {
  /** how often this node announces itself even when nothing changed; a peer's entry expires after three */
  intervalMs?: number
  /** after a change, how long to gather further changes into one announcement (a slot changes with every request) */
  debounceMs?: number
  /** read at every announcement */
  state: () => LocalLlmState
}

export interface LlmAnnouncementsComponents {
  peerId: PeerId | string
  pubsub: Pick<GossipSub, 'topicValidators' | 'subscribe' | 'unsubscribe' | 'publish'>
  /** admission of gossip senders; 'removed' (a peer disconnected) drops its entry */
  peers: Pick<AdmittedPeers, 'isAdmitted' | 'denial' | 'on' | 'off'>
  log: Pick<Logger, 'debug' | 'warn'>
  now?: () => number
}

/** A peer's newest announcement, as this node received it. */
export interface PeerAnnouncement extends LlmAnnouncement {
  /** this node's clock when it arrived: expiry counts from here, never from the sender's `at` */
  receivedAt: number
}

/** A peer that announced a model: the slots that matter for it (its own when announced, else the peer's in all). */
export interface ModelCandidate {
  peerId: string
  sha256: string
  slots: Slots
  receivedAt: number
}

export const DEFAULT_ANNOUNCE_INTERVAL_MS = 5_000
export const DEFAULT_ANNOUNCE_DEBOUNCE_MS = 250

/** `llmAnnouncements(init)(components)`: this node's models on LLM_TOPIC, and the table of its peers'. */
export function llmAnnouncements (init: LlmAnnouncementsInit): (components: LlmAnnouncementsComponents) => LlmAnnouncements {
  return (components) => new LlmAnnouncements(init, components)
}

/**
 * Who serves which model: every node with models loaded gossips them (and how busy its slots
 * are) on LLM_TOPIC when that changes and every `intervalMs`; this node keeps the newest
 * announcement of each admitted neighbour, until it is three intervals old or the peer disconnects.
 * Only a neighbour's own announcement counts (the signed `from` is the `peerId` it names and
 * is admitted here): a node can only send requests to peers it is admitted to anyway.
 */
export class LlmAnnouncements {
  private readonly init: Required<Omit<LlmAnnouncementsInit, 'state'>> & Pick<LlmAnnouncementsInit, 'state'>
  private readonly deps: LlmAnnouncementsComponents
  private readonly self: string
  private readonly now: () => number
  private readonly table = new Map<string, PeerAnnouncement>()
  private timer: NodeJS.Timeout | null = null
  private pending: NodeJS.Timeout | null = null
  private lastAt = 0
  /** whether the last announcement listed models: an empty one goes out once, so peers forget us at once */
  private announcedModels = false
  private subscribed = false
  private readonly onRemoved = (peer: string): void => { this.table.delete(peer) }

  constructor (init: LlmAnnouncementsInit, components: LlmAnnouncementsComponents) {
    this.init = { intervalMs: DEFAULT_ANNOUNCE_INTERVAL_MS, debounceMs: DEFAULT_ANNOUNCE_DEBOUNCE_MS, ...init }
    this.deps = components
    this.self = components.peerId.toString()
    this.now = components.now ?? Date.now
  }

  start (): void {
    this.deps.peers.on('removed', this.onRemoved)
    this.timer = setInterval(() => {
      this.sweep()
      void this.publish()
    }, this.init.intervalMs)
    this.timer.unref()
  }

  /** After gossipsub has started (libp2p starts a host's services side by side). */
  afterStart (): void {
    const { pubsub } = this.deps
    pubsub.topicValidators.set(LLM_TOPIC, (source, message) => toValidatorResult[this.validate(source, message)])
    pubsub.subscribe(LLM_TOPIC)
    this.subscribed = true
    void this.publish()
  }

  /** Before gossipsub stops. */
  beforeStop (): void {
    if (!this.subscribed) return
    this.subscribed = false
    const { pubsub } = this.deps
    pubsub.unsubscribe(LLM_TOPIC)
    pubsub.topicValidators.delete(LLM_TOPIC)
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    if (this.pending != null) clearTimeout(this.pending)
    this.timer = this.pending = null
    this.deps.peers.off('removed', this.onRemoved)
    this.table.clear()
  }

  /** This node's models or load changed: announce soon (changes within debounceMs go out as one). */
  changed (): void {
    if (this.pending != null || !this.subscribed) return
    this.pending = setTimeout(() => {
      this.pending = null
      void this.publish()
    }, this.init.debounceMs)
    this.pending.unref()
  }

  /** Peers' announcements that have not expired. */
  announcements (): PeerAnnouncement[] {
    this.sweep()
    return [...this.table.values()]
  }

  /** Peers that announce `model`, with the slots that tell how busy they are for it. */
  candidates (model: ModelId): ModelCandidate[] {
    const found: ModelCandidate[] = []
    for (const announcement of this.announcements()) {
      const entry = announcement.models.find((m) => m.id === model)
      if (entry == null) continue
      found.push({ peerId: announcement.peerId, sha256: entry.sha256, slots: entry.slots ?? announcement.slots, receivedAt: announcement.receivedAt })
    }
    return found
  }

  /** Announces this node's state now (nothing when it has no models and said so already). */
  async publish (): Promise<void> {
    if (!this.subscribed) return
    let state: LocalLlmState
    try {
      state = this.init.state()
    } catch (err) {
      this.deps.log.warn({ err }, 'reading the inference state to announce failed')
      return
    }
    if (state.models.length === 0 && !this.announcedModels) return
    // strictly increasing, so receivers can drop an older announcement that arrives late
    const at = this.lastAt = Math.max(this.now(), this.lastAt + 1)
    // callers do not wait (timers, changes): nothing may escape as a rejection
    try {
      const { bytes, omitted } = encodeAnnouncement({ v: 1, peerId: this.self, models: state.models, slots: state.slots, at })
      if (omitted > 0) this.deps.log.warn({ omitted }, 'some loaded models did not fit in the announcement')
      this.announcedModels = state.models.length > 0
      await this.deps.pubsub.publish(LLM_TOPIC, bytes)
    } catch (err) {
      this.deps.log.debug({ err: (err as Error).message }, 'announcing loaded models failed')
    }
  }

  /** The topic validator: admission, then the announcement itself (its size and shape, and that its sender wrote it). */
  validate (source: PeerId, message: Message): GossipVerdict {
    const admission = admissionVerdict(this.deps.peers, source, message)
    if (admission !== 'accept' || message.type !== 'signed') return admission
    const from = message.from.toString()
    let announcement: LlmAnnouncement
    try {
      announcement = decodeAnnouncement(message.data)
    } catch (err) {
      if (err instanceof InferFrameError || err instanceof UntrustedJsonError) return 'reject'
      throw err
    }
    // a node announces itself only: anything else is forged or relayed out of place
    if (announcement.peerId !== from) return 'reject'
    if (from === this.self) return 'ignore'
    // a sender this node has no connection to: nothing wrong with it, but not a peer to send requests to
    if (!this.deps.peers.isAdmitted(from)) return 'ignore'
    const known = this.table.get(from)
    if (known != null && known.at >= announcement.at) return 'ignore'
    this.table.set(from, { ...announcement, receivedAt: this.now() })
    return 'accept'
  }

  private sweep (): void {
    const oldest = this.now() - 3 * this.init.intervalMs
    for (const [peer, announcement] of this.table) {
      if (announcement.receivedAt < oldest) this.table.delete(peer)
    }
  }
}
