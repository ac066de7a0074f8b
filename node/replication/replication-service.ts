import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { MemoryDatastore } from 'datastore-core'
import type { Logger } from 'pino'
import semver from 'semver'
import { isOrbitdbTopic } from '../../protocols/ids.ts'
import type { ReplicationJobRecord } from '../../protocols/replicas.ts'
import type { AdmittedPeers, Trust } from '../admission/index.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import type { Host } from '../p2p/index.ts'
import { bkgBlockBroker } from './block-broker.ts'
import { createBkgHelia, type BkgHelia } from './helia.ts'
import type { ModelService, StoredModel } from '../models/index.ts'
import type { ReplicaLog } from './replica-log.ts'

export interface ReplicationDeps {
  host: Host
  peers: AdmittedPeers
  trust: Trust
  models: ModelService
  privateKey: PrivateKey
  log: Logger
}

export interface ReplicaHolder {
  peerId: string
  /** the holder is this node or an admitted peer connected now */
  live: boolean
  since: string
}

export interface ReplicationJob {
  id: string
  name: string
  version: string
  namespace: string
  replicas: number
  /** `done`: at least `replicas` live nodes hold a verified copy */
  state: 'replicating' | 'done' | 'cancelled'
  holders: string[]
  /** live nodes whose certificate lists the namespace (holders included) */
  eligible: number
  /** this node is pulling the model for the job */
  pulling: boolean
  createdBy: string
  createdAt: string
  updatedAt: string
}

export class ReplicationError extends BkgError {}

const RECONCILE_INTERVAL_MS = 5_000
const RETRY_AFTER_FAILURE_MS = 10_000

/**
 * Replica tracking and replication jobs. Every node records in the replica log (OrbitDB) which
 * model versions it holds verified; a job says "keep N replicas of X in namespace Y". There is no
 * coordinator: each node runs the same placement over the same log — the live eligible nodes not
 * holding X, ranked by a hash of (job, PeerId) — and pulls X itself when it is among the first
 * N − holders. A holder that leaves (disconnects) stops counting, so the next-ranked node pulls.
 */
export class ReplicationService {
  private readonly dir: string
  private readonly deps: ReplicationDeps
  private helia?: BkgHelia
  private replicaLog?: ReplicaLog
  private timer?: NodeJS.Timeout
  private reconciling = false
  private reconcileAgain = false
  /** job id → when this node last started a pull for it */
  private readonly attempts = new Map<string, { pullId: string, at: number }>()
  private startup?: Promise<void>
  private readonly onChange = (): void => { this.scheduleReconcile() }
  private readonly onAdded = (model: StoredModel): void => { void this.recordHolding(model, true) }
  private readonly onRemoved = (model: StoredModel): void => { void this.recordHolding(model, false) }

  constructor (dir: string, deps: ReplicationDeps) {
    this.dir = dir
    this.deps = deps
  }

  /**
   * Opens the replica log on first need, not at boot: when this node holds a model or gets one,
   * when a peer opens its log (its subscription to the log's topic arrives), or when the API asks.
   * A mesh without models never loads OrbitDB (measured +7 MiB RSS per idle node).
   */
  async start (): Promise<void> {
    const { models, host } = this.deps
    if (models.store.list().length > 0) {
      await this.opened()
      return
    }
    models.on('added', this.openOnDemand)
    host.services.pubsub.addEventListener('subscription-change', this.onSubscriptionChange)
  }

  /** Resolves once the replica log is open (opening it if needed). */
  async opened (): Promise<void> {
    if (this.startup == null) {
      this.removeTriggers()
      this.startup = this.open()
      this.startup.catch((err: Error) => {
        this.deps.log.error({ err }, 'the replica log did not open')
        this.startup = undefined
      })
    }
    try {
      await this.startup
    } catch (err) {
      throw new ReplicationError('replicas_unavailable', 503, `the replica log could not be opened: ${(err as Error).message}`)
    }
  }

  // opened() logs a failure to open where it happens; the trigger has nobody to tell
  private readonly openOnDemand = (): void => { void this.opened().catch(() => {}) }

  private readonly onSubscriptionChange = (event: CustomEvent<{ subscriptions: Array<{ topic: string, subscribe: boolean }> }>): void => {
    if (event.detail.subscriptions.some((s) => s.subscribe && isOrbitdbTopic(s.topic))) this.openOnDemand()
  }

  private removeTriggers (): void {
    this.deps.models.off('added', this.openOnDemand)
    this.deps.host.services.pubsub.removeEventListener('subscription-change', this.onSubscriptionChange as any)
  }

  private async open (): Promise<void> {
    const { host, peers, models } = this.deps
    this.helia = await createBkgHelia({
      host,
      blockstore: models.store.blockstore,
      // pins are only kept for Helia's GC, which BKG never runs: nothing to persist
      datastore: new MemoryDatastore(),
      blockBrokers: [bkgBlockBroker({ host, peers })]
    })
    await this.helia.start()
    // OrbitDB and its LevelDB bindings load here, off the start-up path
    const { ReplicaLog } = await import('./replica-log.ts')
    const replicaLog = new ReplicaLog(join(this.dir, 'replicas'), { helia: this.helia, privateKey: this.deps.privateKey, trust: this.deps.trust, log: this.deps.log })
    try {
      await replicaLog.start()
    } catch (err) {
      // leave nothing half open: a later call tries again from scratch
      await replicaLog.stop().catch((stopErr: unknown) => { this.deps.log.warn({ err: stopErr }, 'closing the replica log after its failed start failed') })
      await this.helia.stop().catch((stopErr: unknown) => { this.deps.log.warn({ err: stopErr }, 'stopping Helia after the replica log\'s failed start failed: it may keep running') })
      this.helia = undefined
      throw err
    }
    // answered only once the log is loaded: an empty view would read as "nobody holds anything"
    this.replicaLog = replicaLog
    this.replicaLog.on('change', this.onChange)
    peers.on('admitted', this.onChange)
    peers.on('removed', this.onChange)
    models.on('added', this.onAdded)
    models.on('removed', this.onRemoved)
    await this.syncHoldings()
    this.timer = setInterval(this.onChange, RECONCILE_INTERVAL_MS)
    this.timer.unref()
    this.deps.log.info({ records: this.replicaLog.records().length }, 'replica log open')
  }

  async stop (): Promise<void> {
    this.removeTriggers()
    await this.startup?.catch(() => {}) // a failed open was logged by opened(); stop only waits for it to settle
    clearInterval(this.timer)
    const { peers, models } = this.deps
    peers.off('admitted', this.onChange)
    peers.off('removed', this.onChange)
    models.off('added', this.onAdded)
    models.off('removed', this.onRemoved)
    this.replicaLog?.off('change', this.onChange)
    await this.replicaLog?.stop()
    await this.helia?.stop()
  }

  /** Every node that says it holds a verified copy of name@version. */
  holders (name: string, version: string): ReplicaHolder[] {
    return this.log().replicas()
      .filter((r) => r.name === name && r.version === version && r.held)
      .map((r) => ({ peerId: r.peerId, live: this.isLiveHolder(r.peerId, name, version), since: r.at }))
  }

  /** What the replica log says about every model version: holders, live or not. */
  async replicaTable (): Promise<Array<{ name: string, version: string, holders: ReplicaHolder[] }>> {
    await this.opened()
    const keys = new Map<string, { name: string, version: string }>()
    for (const r of this.log().replicas()) if (r.held) keys.set(`${r.name}@${r.version}`, { name: r.name, version: r.version })
    return [...keys.values()].map(({ name, version }) => ({ name, version, holders: this.holders(name, version) }))
  }

  async createJob (init: { name: string, version?: string, namespace: string, replicas: number }): Promise<ReplicationJob> {
    await this.opened()
    const log = this.log()
    if (!this.deps.trust.own.roles.includes('admin')) {
      throw new ReplicationError('not_admin_node', 403, 'replication jobs are created by a node whose certificate has the admin role')
    }
    const version = init.version ?? this.latestKnownVersion(init.name)
    if (version == null) throw new ReplicationError('model_unknown', 404, `no node is known to hold ${init.name}, and no signed manifest for it was seen: give a version or publish it first`)
    const now = new Date().toISOString()
    const record: ReplicationJobRecord = {
      kind: 'job',
      id: randomBytes(8).toString('hex'),
      name: init.name,
      version,
      namespace: init.namespace,
      replicas: init.replicas,
      state: 'active',
      createdBy: this.deps.host.peerId.toString(),
      createdAt: now,
      at: now
    }
    await log.write(record)
    this.scheduleReconcile()
    return this.view(record)
  }

  async cancelJob (id: string): Promise<ReplicationJob> {
    await this.opened()
    const job = this.jobRecord(id)
    if (job.createdBy !== this.deps.host.peerId.toString()) {
      throw new ReplicationError('not_job_owner', 403, `job ${id} was created by ${job.createdBy}; cancel it there`)
    }
    if (job.state === 'cancelled') return this.view(job)
    const cancelled: ReplicationJobRecord = { ...job, state: 'cancelled', at: new Date().toISOString() }
    await this.log().write(cancelled)
    return this.view(cancelled)
  }

  async jobs (): Promise<ReplicationJob[]> {
    await this.opened()
    return this.log().jobs().map((job) => this.view(job)).sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  async job (id: string): Promise<ReplicationJob> {
    await this.opened()
    return this.view(this.jobRecord(id))
  }

  private jobRecord (id: string): ReplicationJobRecord {
    const record = this.log().jobs().find((job) => job.id === id)
    if (record == null) throw new ReplicationError('job_not_found', 404, `no replication job ${id}`)
    return record
  }

  private view (job: ReplicationJobRecord): ReplicationJob {
    const holders = this.liveHolders(job)
    const eligible = this.livePeers().filter((peer) => this.namespacesOf(peer).includes(job.namespace)).length
    const attempt = this.attempts.get(job.id)
    const pull = attempt == null ? undefined : this.deps.models.job(attempt.pullId)
    return {
      id: job.id,
      name: job.name,
      version: job.version,
      namespace: job.namespace,
      replicas: job.replicas,
      state: job.state === 'cancelled' ? 'cancelled' : holders.length >= job.replicas ? 'done' : 'replicating',
      holders,
      eligible,
      pulling: pull != null && pull.finishedAt == null,
      createdBy: job.createdBy,
      createdAt: job.createdAt,
      updatedAt: job.at
    }
  }

  private log (): ReplicaLog {
    if (this.replicaLog == null) throw new ReplicationError('replicas_unavailable', 503, 'the replica log is not open')
    return this.replicaLog
  }

  private latestKnownVersion (name: string): string | null {
    const held = this.deps.models.store.latestVersion(name)
    if (held != null) return held
    const seen = this.deps.models.catalogFor(name).map((envelope) => envelope.manifest.version)
    const recorded = this.log().replicas().filter((r) => r.name === name && r.held).map((r) => r.version)
    const all = [...seen, ...recorded]
    return all.length === 0 ? null : semver.rsort(all)[0]
  }

  private get self (): string {
    return this.deps.host.peerId.toString()
  }

  /** this node and the admitted peers connected to it */
  private livePeers (): string[] {
    return [this.self, ...[...this.deps.peers.entries()].map(([id]) => id)]
  }

  private namespacesOf (peerId: string): string[] {
    if (peerId === this.self) return this.deps.trust.own.namespaces
    return this.deps.peers.get(peerId)?.namespaces ?? []
  }

  private isLiveHolder (peerId: string, name: string, version: string): boolean {
    if (peerId === this.self) return this.deps.models.store.get(name, version) != null
    return this.deps.peers.isAdmitted(peerId)
  }

  /** the live holders that count for a job: nodes of its namespace */
  private liveHolders (job: ReplicationJobRecord): string[] {
    return this.holders(job.name, job.version)
      .filter((h) => h.live && this.namespacesOf(h.peerId).includes(job.namespace))
      .map((h) => h.peerId)
      .sort()
  }

  /** Makes the log say what the store holds (after a crash between the two, or an old data dir). */
  private async syncHoldings (): Promise<void> {
    const log = this.log()
    const held = new Set(this.deps.models.store.list().map((m) => `${m.name}@${m.version}`))
    for (const model of this.deps.models.store.list()) {
      const record = log.get(`replica/${this.self}/${model.name}/${model.version}`)?.record
      if (record?.kind !== 'replica' || !record.held) await this.recordHolding(model, true)
    }
    for (const record of log.replicas()) {
      if (record.peerId === this.self && record.held && !held.has(`${record.name}@${record.version}`)) {
        await this.recordHolding({ name: record.name, version: record.version }, false)
      }
    }
  }

  private async recordHolding (model: Pick<StoredModel, 'name' | 'version'>, held: boolean): Promise<void> {
    try {
      await this.log().write({ kind: 'replica', peerId: this.self, name: model.name, version: model.version, held, at: new Date().toISOString() })
    } catch (err) {
      this.deps.log.warn({ model: `${model.name}@${model.version}`, err: (err as Error).message }, 'could not record a replica')
    }
  }

  private scheduleReconcile (): void {
    if (this.replicaLog == null) return
    if (this.reconciling) {
      this.reconcileAgain = true
      return
    }
    this.reconciling = true
    void Promise.resolve().then(() => this.reconcile()).catch((err: unknown) => {
      this.deps.log.warn({ err }, 'reconciling replication jobs failed: the next change or the timer tries again')
    }).finally(() => {
      this.reconciling = false
      if (this.reconcileAgain) {
        this.reconcileAgain = false
        this.scheduleReconcile()
      }
    })
  }

  /** Pulls the models of active jobs this node is placed for. */
  private reconcile (): void {
    const { models } = this.deps
    for (const job of this.log().jobs()) {
      if (job.state !== 'active') continue
      if (!this.deps.trust.own.namespaces.includes(job.namespace)) continue
      if (models.store.get(job.name, job.version) != null) continue
      const holders = this.liveHolders(job)
      const missing = job.replicas - holders.length
      if (missing <= 0) continue
      const candidates = this.livePeers()
        .filter((peer) => !holders.includes(peer) && this.namespacesOf(peer).includes(job.namespace))
        .sort((a, b) => rank(job.id, a).localeCompare(rank(job.id, b)))
      if (!candidates.slice(0, missing).includes(this.self)) continue
      const attempt = this.attempts.get(job.id)
      const previous = attempt == null ? undefined : models.job(attempt.pullId)
      if (previous != null && previous.finishedAt == null) continue
      if (attempt != null && previous?.state === 'failed' && Date.now() - attempt.at < RETRY_AFTER_FAILURE_MS) continue
      const pull = models.startPull(job.name, job.version)
      this.attempts.set(job.id, { pullId: pull.id, at: Date.now() })
      this.deps.log.info({ job: job.id, model: `${job.name}@${job.version}`, holders: holders.length, wanted: job.replicas }, 'pulling for a replication job')
    }
  }
}

/** rendezvous hashing: every node ranks the candidates of a job the same way */
function rank (jobId: string, peerId: string): string {
  return createHash('sha256').update(`${jobId}/${peerId}`).digest('hex')
}
