import type { GossipSub } from '@libp2p/gossipsub'
import type { AbortOptions, PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { AdmittedPeers } from '../../admission/index.ts'
import type { ProtocolStreams } from '../../p2p/index.ts'
import type { InferenceBackend, LlmModelInfo, MeshModel, ModelId } from '../types.ts'
import { llmAnnouncements, type LlmAnnouncements, type LlmAnnouncementsInit, type LocalLlmState } from './announcements.ts'
import { inferServer, type InferServer, type InferServerInit } from './infer-server.ts'
import { PeerChoice, type PeerChoiceInit } from './peer-choice.ts'
import { remoteBackend, type RemoteBackend, type RemoteBackendInit } from './remote-backend.ts'

export interface PeerMeshInit {
  announcements?: Omit<LlmAnnouncementsInit, 'state'>
  server?: InferServerInit
  remote?: RemoteBackendInit
  choice?: PeerChoiceInit
}

export interface PeerMeshComponents {
  peerId: PeerId
  /** serving and dialling `/bkg/infer/1.0.0` */
  streams: ProtocolStreams
  /** LLM_TOPIC: its validator, subscription and this node's announcements */
  pubsub: Pick<GossipSub, 'topicValidators' | 'subscribe' | 'unsubscribe' | 'publish'>
  peers: Pick<AdmittedPeers, 'isAdmitted' | 'denial' | 'on' | 'off'>
  /** libp2p's ping: `(peer, options) => host.services.ping.ping(peer, options)` */
  ping?: (peer: PeerId, options?: AbortOptions) => Promise<number>
  log: Pick<Logger, 'debug' | 'warn'>
  /** a peer failed before the first token and the request went on to another (metrics) */
  onFallback?: (reason: string, peerId: string) => void
}

/** What of the LLM service the mesh reads: its models, to announce the loaded ones. */
export interface LocalModels {
  models: () => Array<Pick<LlmModelInfo, 'id' | 'sha256' | 'loaded' | 'slots'>>
}

/** This node's loaded models and their slots, as announced. */
export function localState (source: LocalModels): LocalLlmState {
  const models = source.models().filter((model) => model.loaded && model.slots != null)
  const slots = { busy: 0, total: 0, queued: 0 }
  for (const model of models) {
    slots.busy += model.slots!.busy
    slots.total += model.slots!.total
    slots.queued += model.slots!.queued
  }
  return { models: models.map((model) => ({ id: model.id, sha256: model.sha256, slots: { ...model.slots! } })), slots }
}

/**
 * `peerMesh(init, components)`: the LLM service's `mesh` hook. Given the service's local-only
 * backend, it makes the `/bkg/infer` server (peers' requests run on that backend and never hop
 * again), this node's announcements and the table of its peers', the peer choice, and the
 * remote backend that runs a request on the best peer.
 */
export function peerMesh (init: PeerMeshInit, components: PeerMeshComponents): (local: InferenceBackend, service: LocalModels) => PeerMesh {
  return (local, service) => new PeerMesh(init, components, local, service)
}

export class PeerMesh {
  readonly announcements: LlmAnnouncements
  readonly server: InferServer
  readonly choice: PeerChoice
  readonly backend: RemoteBackend
  private readonly peers: PeerMeshComponents['peers']
  private readonly onRemoved = (peer: string): void => { this.choice.forget(peer) }

  constructor (init: PeerMeshInit, components: PeerMeshComponents, local: InferenceBackend, service: LocalModels) {
    const { peerId, streams, pubsub, peers, ping, log, onFallback } = components
    this.peers = peers
    this.announcements = llmAnnouncements({ ...init.announcements, state: () => localState(service) })({ peerId, pubsub, peers, log })
    this.server = inferServer(init.server)({ streams, peers, local, log })
    this.choice = new PeerChoice(init.choice, { ping, log })
    this.backend = remoteBackend(init.remote)({ streams, candidates: (model) => this.announcements.candidates(model), choice: this.choice, log, onFallback })
  }

  /** Peers announcing `model`, and how many of them have a sequence free (counting this node's requests in flight to them). */
  candidates (model: ModelId): { peers: number, free: number } {
    const candidates = this.announcements.candidates(model)
    const free = candidates.filter((c) => c.slots.busy + c.slots.queued + this.choice.inFlight(c.peerId) < c.slots.total).length
    return { peers: candidates.length, free }
  }

  models (): MeshModel[] {
    return this.announcements.announcements().flatMap((announcement) => announcement.models.map((model) => ({
      id: model.id,
      sha256: model.sha256,
      peerId: announcement.peerId,
      slots: model.slots ?? announcement.slots,
      latencyMs: this.choice.roundTripOf(announcement.peerId),
      seenAt: new Date(announcement.receivedAt).toISOString()
    })))
  }

  changed (): void {
    this.announcements.changed()
  }

  /**
   * The LLM service starts after the host (gossipsub runs by then), so the topic is joined here;
   * and it stops before the host, so it is left here too.
   */
  async start (): Promise<void> {
    this.peers.on('removed', this.onRemoved)
    await this.server.start()
    this.announcements.start()
    this.announcements.afterStart()
  }

  async stop (): Promise<void> {
    this.peers.off('removed', this.onRemoved)
    this.announcements.beforeStop()
    this.announcements.stop()
    await this.server.stop()
  }
}
