import { EventEmitter } from 'node:events'
import { createWriteStream } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { CID } from 'multiformats/cid'
import type { Logger } from 'pino'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import { MODELS_TOPIC } from '../../protocols/ids.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { decodeEnvelope, PackageError } from '../../protocols/model-package.ts'
import type { Trust } from '../admission/index.ts'
import { admissionVerdict, toValidatorResult, type AdmissionCheck, type GossipVerdict } from '../pubsub/index.ts'
import { verifyEnvelope } from '../model-packages/index.ts'
import type { EnvelopeOf } from './model-store.ts'
import type { ConnectedPeers, HostComponents, ProtocolStreams } from '../p2p/index.ts'
import { randomBytes } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import { BlockExchange } from './block-exchange.ts'
import {
  DEFAULT_EXCHANGE_STREAMS, DEFAULT_MAX_CATALOG, DEFAULT_MAX_FINISHED_JOBS, DEFAULT_PROVIDE_TIMEOUT_MS, DEFAULT_PROVIDER_LOOKUP_TIMEOUT_MS
} from './constants.ts'
import { ModelStore, type StoredModel } from './model-store.ts'
import { Puller, type PullerInit, type PullProgress } from './puller.ts'

export interface ModelServiceInit {
  /** `<data>/models`: the store, and `incoming/` for uploads being received */
  dir: string
  maxCatalog?: number
  maxFinishedJobs?: number
  provideTimeoutMs?: number
  providerLookupTimeoutMs?: number
  exchangeStreams?: number
  pull?: PullerInit
}

/** What the model service uses of the node: the host's parts by name, not the host. */
export interface ModelServiceComponents {
  /** this node: never its own provider */
  peerId: PeerId
  /** serving /bkg/blocks and /bkg/manifests, and dialling peers for both */
  streams: ProtocolStreams
  /** connected peers: asked first for an envelope, and none means provider records must wait */
  connections: ConnectedPeers
  /** 'peer:connect': provider records that had to wait go out */
  events: HostComponents['events']
  /** provider records of held files in the DHT, and looking up providers */
  contentRouting: Pick<HostComponents['contentRouting'], 'provide' | 'findProviders'>
  /** the catalog topic: its validator, subscription and the manifests this node publishes */
  pubsub: Pick<GossipSub, 'topicValidators' | 'subscribe' | 'unsubscribe' | 'publish'>
  /** the operator CA and current CRL that every package and manifest is verified against */
  trust: Pick<Trust, 'caPem' | 'crl'>
  /** whether a gossip source is admitted */
  peers: AdmissionCheck
  /** a peer served a block that does not match its CID */
  penalize: (peer: PeerId, reason: string) => void
  log: Pick<Logger, 'debug' | 'info' | 'warn'>
}

export interface CatalogEntry {
  envelope: EnvelopeOf
  /** the node that published it */
  origin: string
  seenAt: string
}

export interface PullJob extends PullProgress {
  id: string
  startedAt: string
  finishedAt: string | null
}

export interface PublishResult {
  model: StoredModel
  added: boolean
  /** file CIDs whose provider record reached the DHT */
  announced: number
  /** peers the manifest gossip went to */
  recipients: number
}

/**
 * Models on this node: the verified store, provider records in the DHT for every file held and the
 * signed manifest spread over gossip when a model is published.
 */
export interface ModelServiceEvents {
  /** a verified model was added (published or pulled) */
  added: [model: StoredModel]
  removed: [model: StoredModel]
}

/**
 * `modelService({ dir })(components)`: the models this node holds, verified, provided in the DHT
 * and announced over gossip; pulls from peers; the catalog of what the mesh announced.
 */
export function modelService (init: ModelServiceInit): (components: ModelServiceComponents) => ModelService {
  return (components) => new ModelService(init, components)
}

export class ModelService extends EventEmitter<ModelServiceEvents> {
  readonly store: ModelStore
  private readonly dir: string
  private readonly deps: ModelServiceComponents
  private readonly maxCatalog: number
  private readonly maxFinishedJobs: number
  private readonly provideTimeoutMs: number
  private readonly providerLookupTimeoutMs: number
  private readonly exchange: BlockExchange
  private readonly puller: Puller
  private readonly jobs = new Map<string, PullJob>()
  /** running jobs: settles when the job has finished */
  private readonly settled = new Map<string, Promise<void>>()
  /** signed manifests announced in the mesh, verified on arrival: what can be pulled */
  private readonly catalog = new Map<string, CatalogEntry>()
  /** models (by name@version) whose provider records have not reached the DHT yet; retried when a peer connects */
  private readonly unannounced = new Map<string, StoredModel>()
  private readonly onPeerConnect = (): void => {
    if (this.unannounced.size === 0) return
    const pending = [...this.unannounced.values()]
    this.unannounced.clear()
    void Promise.all(pending.map(async (model) => await this.announce(model))).catch((err: unknown) => {
      this.deps.log.warn({ err }, 'announcing held models failed')
    })
  }

  constructor (init: ModelServiceInit, components: ModelServiceComponents) {
    super()
    this.dir = init.dir
    this.deps = components
    this.maxCatalog = init.maxCatalog ?? DEFAULT_MAX_CATALOG
    this.maxFinishedJobs = init.maxFinishedJobs ?? DEFAULT_MAX_FINISHED_JOBS
    this.provideTimeoutMs = init.provideTimeoutMs ?? DEFAULT_PROVIDE_TIMEOUT_MS
    this.providerLookupTimeoutMs = init.providerLookupTimeoutMs ?? DEFAULT_PROVIDER_LOOKUP_TIMEOUT_MS
    const { streams, connections, contentRouting, peerId, log } = components
    const trust = (): { caPem: string, crl: Trust['crl'] } => ({ caPem: components.trust.caPem, crl: components.trust.crl })
    this.store = new ModelStore(init.dir, { trust })
    this.exchange = new BlockExchange({ streams, store: this.store, log }, init.exchangeStreams ?? DEFAULT_EXCHANGE_STREAMS)
    this.puller = new Puller({
      streams,
      connections,
      routing: { peerId, contentRouting },
      store: this.store,
      trust,
      penalize: components.penalize,
      log,
      catalog: (name) => this.catalogFor(name)
    }, init.pull)
  }

  /** Starts pulling a model (or joins the pull already running for it) and returns its job. */
  startPull (name: string, version: string | null): PullJob {
    for (const job of this.jobs.values()) {
      if (job.name === name && (version == null || job.version === version) && job.finishedAt == null) return job
    }
    const job: PullJob = {
      id: randomBytes(8).toString('hex'),
      state: 'resolving',
      name,
      version,
      totalBytes: 0,
      bytes: 0,
      blocks: 0,
      resumedBlocks: 0,
      fetchedBlocks: 0,
      peers: [],
      error: null,
      startedAt: new Date().toISOString(),
      finishedAt: null
    }
    this.jobs.set(job.id, job)
    this.forgetOldJobs()
    const settled = this.puller.pull(name, version, job).then(({ model, added }) => {
      job.version = model.version
      job.state = 'done'
      job.bytes = job.totalBytes
      if (!added) return
      this.emit('added', model)
      // the model is verified and in place: the job is done; provider records follow
      void this.announce(model).catch((err: unknown) => { this.deps.log.warn({ err }, 'announcing a pulled model failed') })
    }, (err: Error) => {
      job.state = 'failed'
      // BKG's own refusals keep their code and status; anything else (ENOSPC, a stream reset) is pull_failed
      job.error = err instanceof BkgError ? { code: err.code, message: err.message, status: err.status } : { code: 'pull_failed', message: err.message }
      this.deps.log.warn({ model: `${name}@${version ?? 'latest'}`, err: err.message }, 'pull failed')
    }).finally(() => {
      job.finishedAt = new Date().toISOString()
      this.settled.delete(job.id)
    })
    this.settled.set(job.id, settled)
    return job
  }

  /** The job once it has finished, or as it is after `ms`, whichever comes first; undefined for an unknown id. */
  async waitForJob (id: string, ms: number): Promise<PullJob | undefined> {
    const settled = this.settled.get(id)
    if (settled != null && ms > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([settled, new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })])
      clearTimeout(timer)
    }
    return this.jobs.get(id)
  }

  /** Finished jobs beyond the newest `maxFinishedJobs` are dropped (replication retries add one each time). */
  private forgetOldJobs (): void {
    const finished = [...this.jobs.values()].filter((job) => job.finishedAt != null)
    for (const job of finished.slice(0, Math.max(0, finished.length - this.maxFinishedJobs))) this.jobs.delete(job.id)
  }

  catalogEntries (): CatalogEntry[] {
    return [...this.catalog.values()]
  }

  /** Verified envelopes of every version of `name` announced in the mesh. */
  catalogFor (name: string): EnvelopeOf[] {
    return this.catalogEntries().filter((e) => e.envelope.manifest.name === name).map((e) => e.envelope)
  }

  /** A manifest gossiped by its publisher: kept (and forwarded) only if its signature verifies. */
  private validateAnnouncement (source: PeerId, message: Message): GossipVerdict {
    const admission = admissionVerdict(this.deps.peers, source, message)
    if (admission !== 'accept' || message.type !== 'signed') return admission
    try {
      const envelope = decodeEnvelope(message.data) as EnvelopeOf
      verifyEnvelope(envelope, { caPem: this.deps.trust.caPem, crl: this.deps.trust.crl })
      const key = `${envelope.manifest.name}@${envelope.manifest.version}`
      if (!this.catalog.has(key) && this.catalog.size >= this.maxCatalog) this.catalog.delete(this.catalog.keys().next().value as string)
      this.catalog.set(key, { envelope, origin: message.from.toString(), seenAt: new Date().toISOString() })
      return 'accept'
    } catch (err) {
      if (err instanceof PackageError) return 'reject'
      throw err
    }
  }

  job (id: string): PullJob | undefined {
    return this.jobs.get(id)
  }

  listJobs (): PullJob[] {
    return [...this.jobs.values()]
  }

  async start (): Promise<void> {
    await this.store.start()
    await this.exchange.start()
  }

  /** After gossipsub has started (libp2p starts a host's services side by side). */
  afterStart (): void {
    this.deps.events.addEventListener('peer:connect', this.onPeerConnect)
    const { pubsub } = this.deps
    pubsub.topicValidators.set(MODELS_TOPIC, (source, message) => toValidatorResult[this.validateAnnouncement(source, message)])
    pubsub.subscribe(MODELS_TOPIC)
    // re-announce what this node holds; provider records expire and a restart may follow a long gap
    void Promise.all(this.store.list().map(async (model) => await this.announce(model))).catch((err: unknown) => {
      this.deps.log.warn({ err }, 'announcing held models failed')
    })
  }

  /** Before gossipsub stops. */
  beforeStop (): void {
    this.deps.events.removeEventListener('peer:connect', this.onPeerConnect)
    const { pubsub } = this.deps
    pubsub.unsubscribe(MODELS_TOPIC)
    pubsub.topicValidators.delete(MODELS_TOPIC)
  }

  async stop (): Promise<void> {
    await this.exchange.stop()
    await this.store.stop()
  }

  /** the models this node holds */
  list (): StoredModel[] {
    return this.store.list()
  }

  get (name: string, version: string): StoredModel | undefined {
    return this.store.get(name, version)
  }

  /** Re-reads every file of a held model and checks it against the signed manifest. */
  async verify (name: string, version: string): Promise<StoredModel> {
    return await this.store.verify(name, version)
  }

  /** Checks a held model before a runtime uses it: signature, publisher certificate against today's CRL, and every file. */
  async verifyForUse (name: string, version: string): Promise<StoredModel> {
    return await this.store.verifyForUse(name, version)
  }

  /** A held file, every block checked against its CID as it is read. */
  async openFile (name: string, version: string, path: string): ReturnType<ModelStore['openFile']> {
    return await this.store.openFile(name, version, path)
  }

  /**
   * Receives a package as a byte stream (at most `maxBytes`) into the models dir, then publishes
   * it as publishFile does; the partial file goes with a failed upload.
   */
  async publishUpload (body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<PublishResult> {
    const incoming = join(this.dir, 'incoming')
    await mkdir(incoming, { recursive: true })
    const tmp = join(incoming, `${randomBytes(8).toString('hex')}.bkg`)
    try {
      let received = 0
      await pipeline(body, async function * (source: AsyncIterable<Uint8Array>) {
        for await (const chunk of source) {
          received += chunk.byteLength
          if (received > maxBytes) throw new BkgError('body_too_large', 413, `packages are limited to ${maxBytes} bytes`)
          yield chunk
        }
      }, createWriteStream(tmp, { flags: 'wx' }))
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
    return await this.publishFile(tmp)
  }

  /** Peers that announced a CID in the DHT (as `routing findprovs`): what a lookup found within its time. */
  async findProviders (cid: CID, max: number, timeoutMs = this.providerLookupTimeoutMs): Promise<Array<{ peerId: string, addrs: string[] }>> {
    const found = new Map<string, string[]>()
    try {
      for await (const provider of this.deps.contentRouting.findProviders(cid, { signal: AbortSignal.timeout(timeoutMs) })) {
        found.set(provider.id.toString(), provider.multiaddrs.map(String))
        if (found.size >= max) break
      }
    } catch (err) {
      // a lookup that ran out of time or peers answers with what it found
      if (found.size === 0) this.deps.log.debug({ err }, 'provider lookup ended without results')
    }
    return [...found].map(([peerId, addrs]) => ({ peerId, addrs }))
  }

  /** Adds a verified package (a temp file that is removed afterwards), announces and gossips it. */
  async publishFile (path: string): Promise<PublishResult> {
    try {
      const { model, added } = await this.store.addPackage(path)
      if (added) this.emit('added', model)
      const announced = await this.announce(model)
      const envelope = this.store.envelopeOf(model.name, model.version)
      const { recipients } = await this.deps.pubsub.publish(MODELS_TOPIC, new TextEncoder().encode(JSON.stringify(envelope)))
      this.deps.log.info({ model: `${model.name}@${model.version}`, added, announced, recipients: recipients.length }, 'model published')
      return { model, added, announced, recipients: recipients.length }
    } finally {
      await rm(path, { force: true })
    }
  }

  async remove (name: string, version: string): Promise<StoredModel> {
    const model = await this.store.remove(name, version)
    this.emit('removed', model)
    return model
  }

  private async announce (model: StoredModel): Promise<number> {
    if (this.deps.connections.getPeers().length === 0) {
      this.unannounced.set(`${model.name}@${model.version}`, model)
      return 0
    }
    const results = await Promise.allSettled(model.manifest.files.map(async (file) => {
      await this.deps.contentRouting.provide(CID.parse(file.cid), { signal: AbortSignal.timeout(this.provideTimeoutMs) })
    }))
    const failed = results.filter((r) => r.status === 'rejected')
    if (failed.length > 0) {
      this.unannounced.set(`${model.name}@${model.version}`, model)
      this.deps.log.warn({ model: `${model.name}@${model.version}`, failed: failed.length, reason: String((failed[0] as PromiseRejectedResult).reason?.message ?? failed[0]) }, 'some provider records did not reach the DHT')
    }
    return results.length - failed.length
  }
}
