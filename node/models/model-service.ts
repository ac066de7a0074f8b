import { rm } from 'node:fs/promises'
import { CID } from 'multiformats/cid'
import type { Logger } from 'pino'
import { MODELS_TOPIC } from '../../protocols/ids.ts'
import type { Trust } from '../admission/trust.ts'
import type { Host } from '../p2p/host.ts'
import { ModelStore, type StoredModel } from './model-store.ts'

export interface ModelServiceDeps {
  host: Host
  trust: Trust
  log: Logger
}

export interface PublishResult {
  model: StoredModel
  added: boolean
  /** file CIDs whose provider record reached the DHT */
  announced: number
  /** peers the manifest gossip went to */
  recipients: number
}

const PROVIDE_TIMEOUT_MS = 10_000

/**
 * Models on this node: the verified store, provider records in the DHT for every file held and the
 * signed manifest spread over gossip when a model is published.
 */
export class ModelService {
  readonly store: ModelStore
  private readonly deps: ModelServiceDeps
  /** models whose provider records have not reached the DHT yet; retried when a peer connects */
  private readonly unannounced = new Set<StoredModel>()
  private readonly onPeerConnect = (): void => {
    if (this.unannounced.size === 0) return
    const pending = [...this.unannounced]
    this.unannounced.clear()
    void Promise.all(pending.map(async (model) => await this.announce(model))).catch(() => {})
  }

  constructor (dir: string, deps: ModelServiceDeps) {
    this.deps = deps
    this.store = new ModelStore(dir, { trust: () => ({ caPem: deps.trust.caPem, crl: deps.trust.crl }) })
  }

  async start (): Promise<void> {
    await this.store.start()
    this.deps.host.addEventListener('peer:connect', this.onPeerConnect)
    // re-announce what this node holds; provider records expire and a restart may follow a long gap
    void Promise.all(this.store.list().map(async (model) => await this.announce(model))).catch(() => {})
  }

  async stop (): Promise<void> {
    this.deps.host.removeEventListener('peer:connect', this.onPeerConnect)
    await this.store.stop()
  }

  /** Adds a verified package (a temp file that is removed afterwards), announces and gossips it. */
  async publishFile (path: string): Promise<PublishResult> {
    try {
      const { model, added } = await this.store.addPackage(path)
      const announced = await this.announce(model)
      const envelope = this.store.envelopeOf(model.name, model.version)
      const { recipients } = await this.deps.host.services.pubsub.publish(MODELS_TOPIC, new TextEncoder().encode(JSON.stringify(envelope)))
      this.deps.log.info({ model: `${model.name}@${model.version}`, added, announced, recipients: recipients.length }, 'model published')
      return { model, added, announced, recipients: recipients.length }
    } finally {
      await rm(path, { force: true })
    }
  }

  private async announce (model: StoredModel): Promise<number> {
    if (this.deps.host.getPeers().length === 0) {
      this.unannounced.add(model)
      return 0
    }
    const results = await Promise.allSettled(model.manifest.files.map(async (file) => {
      await this.deps.host.contentRouting.provide(CID.parse(file.cid), { signal: AbortSignal.timeout(PROVIDE_TIMEOUT_MS) })
    }))
    const failed = results.filter((r) => r.status === 'rejected')
    if (failed.length > 0) {
      this.unannounced.add(model)
      this.deps.log.warn({ model: `${model.name}@${model.version}`, failed: failed.length, reason: String((failed[0] as PromiseRejectedResult).reason?.message ?? failed[0]) }, 'some provider records did not reach the DHT')
    }
    return results.length - failed.length
  }
}
