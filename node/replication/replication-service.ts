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
import {
  DEFAULT_BLOCK_FANOUT, DEFAULT_BLOCK_TIMEOUT_MS, DEFAULT_MAX_DHT_PROVIDERS, DEFAULT_MAX_VERIFIED_CACHE,
  DEFAULT_RECONCILE_INTERVAL_MS, DEFAULT_RETRY_AFTER_FAILURE_MS, REPLICAS_DIR
} from './constants.ts'
import { createBkgHelia } from './helia.ts'
import type { ModelService, StoredModel } from '../models/index.ts'
import type { ReplicaLog } from './replica-log.ts'

export interface ReplicationInit {
  /** the directory the replica log's OrbitDB files go under (`<dir>/replicas`): the models dir */
  dir: string
  /** how often placement runs again besides on every change (default 5 s) */
  reconcileIntervalMs?: number
  /** how long a node waits to pull again for a job whose last pull failed (default 10 s) */
  retryAfterFailureMs?: number
  /** peers the block broker asks at once for one block (default 4) */
  blockFanout?: number
  /** DHT providers the block broker asks when no connected peer has a block (default 8) */
  maxDhtProviders?: number
  /** how long the block broker looks for one block without a signal from Helia (default 30 s) */
  blockTimeoutMs?: number
  /** replica log entries whose signature check is remembered (default 10 000) */
  maxVerifiedCache?: number
}

/** The replica log as the service uses it: its records, writing one, its change event. */
export type ReplicaLogView = Pick<ReplicaLog, 'records' | 'replicas' | 'jobs' | 'get' | 'write' | 'on' | 'off'>

/** An open replica log and how to close it with everything under it (OrbitDB, then Helia). */
export interface OpenReplicaLog {
  replicaLog: ReplicaLogView
  close: () => Promise<void>
}

export interface ReplicationComponents {
  /**
   * The whole libp2p node. Helia and OrbitDB run on it (OrbitDB registers and dials its
   * protocols, subscribes to topics, reads the peer id; the block broker dials and queries the
   * DHT), so a narrower Pick would not be honest. The service itself reads only `peerId` and
   * `services.pubsub` (its `subscription-change` event, which opens the log on demand).
   */
  host: Host
  /** admitted peers: who is live, their namespaces, admitted/removed events */
  peers: Pick<AdmittedPeers, 'entries' | 'get' | 'isAdmitted' | 'on' | 'off'>
  /** this node's roles and namespaces; the CA and CRL for the replica log's checks */
  trust: Pick<Trust, 'own' | 'caPem' | 'crl'>
  /** the model store and its pulls; `added`/`removed` events record holdings */
  models: Pick<ModelService, 'on' | 'off' | 'job' | 'startPull' | 'catalogFor'> & {
    store: Pick<ModelService['store'], 'list' | 'get' | 'latestVersion' | 'blockstore'>
  }
  /** signs the replica log's records */
  privateKey: PrivateKey
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>
  /**
   * Opens the replica log. Default: Helia over `host` and the model blockstore, then OrbitDB on
   * it. A unit test hands an in-memory log here, so placement runs without OrbitDB.
   */
  openReplicaLog?: () => Promise<OpenReplicaLog>
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

/** rendezvous hashing: every node ranks the candidates of a job the same way */
export function rank (jobId: string, peerId: string): string {
  return createHash('sha256').update(`${jobId}/${peerId}`).digest('hex')
}

/**
 * The placement rule: which live nodes should pull a job's model. When fewer than `replicas`
 * live holders count, the first `replicas − holders` of the live nodes of the job's namespace that
 * do not hold it, ranked by `rank(job, PeerId)`; otherwise none.
 */
export function placedNodes (
  job: Pick<ReplicationJobRecord, 'id' | 'namespace' | 'replicas'>,
  liveHolders: readonly string[],
  livePeers: readonly string[],
  namespacesOf: (peerId: string) => readonly string[]
): string[] {
  const missing = job.replicas - liveHolders.length
  if (missing <= 0) return []
  return livePeers
    .filter((peer) => !liveHolders.includes(peer) && namespacesOf(peer).includes(job.namespace))
    .sort((a, b) => rank(job.id, a).localeCompare(rank(job.id, b)))
    .slice(0, missing)
}

/**
 * Replica tracking and replication jobs. Every node records in the replica log (OrbitDB) which
 * model versions it holds verified; a job says "keep N replicas of X in namespace Y". There is no
 * coordinator: each node runs the same placement over the same log — the live eligible nodes not
 * holding X, ranked by a hash of (job, PeerId) — and pulls X itself when it is among the first
 * N − holders. A holder that leaves (disconnects) stops counting, so the next-ranked node pulls.
 */
export class ReplicationService {
  private readonly components: ReplicationComponents
  private readonly init: ReplicationInit
  private readonly reconcileIntervalMs: number
  private readonly retryAfterFailureMs: number
  private closeLog?: () => Promise<void>
  private replicaLog?: ReplicaLogView
  private timer?: NodeJS.Timeout
  private reconciling = false
  private reconcileAgain = false
  /** job id → when this node last started a pull for it */
  private readonly attempts = new Map<string, { pullId: string, at: number }>()
  private startup?: Promise<void>
  private readonly onChange = (): void => { this.scheduleReconcile() }
  private readonly onAdded = (model: StoredModel): void => { void this.recordHolding(model, true) }
  private readonly onRemoved = (model: StoredModel): void => { void this.recordHolding(model, false) }

  constructor (components: ReplicationComponents, init: ReplicationInit) {
    this.components = components
    this.init = init
    this.reconcileIntervalMs = init.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS
    this.retryAfterFailureMs = init.retryAfterFailureMs ?? DEFAULT_RETRY_AFTER_FAILURE_MS
  }

  /**
   * Opens the replica log on first need, not at boot: when this node holds a model or gets one,
   * when a peer opens its log (its subscription to the log's topic arrives), or when the API asks.
   * A mesh without models never loads OrbitDB (measured +7 MiB RSS per idle node).
   */
  async start (): Promise<void> {
    const { models, host } = this.components
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
        this.components.log.error({ err }, 'the replica log did not open')
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
    this.components.models.off('added', this.openOnDemand)
    this.components.host.services.pubsub.removeEventListener('subscription-change', this.onSubscriptionChange as any)
  }

  /** Helia over the node's host and model blockstore, then the OrbitDB replica log on it. */
  private async openOrbitdbLog (): Promise<OpenReplicaLog> {
    const { host, peers, models, privateKey, trust, log } = this.components
    const helia = await createBkgHelia({
      host,
      blockstore: models.store.blockstore,
      // pins are only kept for Helia's GC, which BKG never runs: nothing to persist
      datastore: new MemoryDatastore(),
      blockBrokers: [bkgBlockBroker({ host, peers }, {
        fanout: this.init.blockFanout ?? DEFAULT_BLOCK_FANOUT,
        maxDhtProviders: this.init.maxDhtProviders ?? DEFAULT_MAX_DHT_PROVIDERS,
        timeoutMs: this.init.blockTimeoutMs ?? DEFAULT_BLOCK_TIMEOUT_MS
      })]
    })
    await helia.start()
    // OrbitDB and its LevelDB bindings load here, off the start-up path
    const { ReplicaLog } = await import('./replica-log.ts')
    const replicaLog = new ReplicaLog(join(this.init.dir, REPLICAS_DIR), {
      helia, privateKey, trust, log, maxVerifiedCache: this.init.maxVerifiedCache ?? DEFAULT_MAX_VERIFIED_CACHE
    })
    try {
      await replicaLog.start()
    } catch (err) {
      // leave nothing half open: a later call tries again from scratch
      await replicaLog.stop().catch((stopErr: unknown) => { log.warn({ err: stopErr }, 'closing the replica log after its failed start failed') })
      await helia.stop().catch((stopErr: unknown) => { log.warn({ err: stopErr }, 'stopping Helia after the replica log\'s failed start failed: it may keep running') })
      throw err
    }
    return {
      replicaLog,
      close: async () => {
        await replicaLog.stop()
        await helia.stop()
      }
    }
  }

  private async open (): Promise<void> {
    const { peers, models } = this.components
    const { replicaLog, close } = await (this.components.openReplicaLog?.() ?? this.openOrbitdbLog())
    this.closeLog = close
    // answered only once the log is loaded: an empty view would read as "nobody holds anything"
    this.replicaLog = replicaLog
    this.replicaLog.on('change', this.onChange)
    peers.on('admitted', this.onChange)
    peers.on('removed', this.onChange)
    models.on('added', this.onAdded)
    models.on('removed', this.onRemoved)
    await this.syncHoldings()
    this.timer = setInterval(this.onChange, this.reconcileIntervalMs)
    this.timer.unref()
    this.components.log.info({ records: this.replicaLog.records().length }, 'replica log open')
  }

  async stop (): Promise<void> {
    this.removeTriggers()
    await this.startup?.catch(() => {}) // a failed open was logged by opened(); stop only waits for it to settle
    clearInterval(this.timer)
    const { peers, models } = this.components
    peers.off('admitted', this.onChange)
    peers.off('removed', this.onChange)
    models.off('added', this.onAdded)
    models.off('removed', this.onRemoved)
    this.replicaLog?.off('change', this.onChange)
    await this.closeLog?.()
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
    if (!this.components.trust.own.roles.includes('admin')) {
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
      createdBy: this.components.host.peerId.toString(),
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
    if (job.createdBy !== this.components.host.peerId.toString()) {
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
    const pull = attempt == null ? undefined : this.components.models.job(attempt.pullId)
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

  private log (): ReplicaLogView {
    if (this.replicaLog == null) throw new ReplicationError('replicas_unavailable', 503, 'the replica log is not open')
    return this.replicaLog
  }

  private latestKnownVersion (name: string): string | null {
    const held = this.components.models.store.latestVersion(name)
    if (held != null) return held
    const seen = this.components.models.catalogFor(name).map((envelope) => envelope.manifest.version)
    const recorded = this.log().replicas().filter((r) => r.name === name && r.held).map((r) => r.version)
    const all = [...seen, ...recorded]
    return all.length === 0 ? null : semver.rsort(all)[0]
  }

  private get self (): string {
    return this.components.host.peerId.toString()
  }

  /** this node and the admitted peers connected to it */
  private livePeers (): string[] {
    return [this.self, ...[...this.components.peers.entries()].map(([id]) => id)]
  }

  private namespacesOf (peerId: string): string[] {
    if (peerId === this.self) return this.components.trust.own.namespaces
    return this.components.peers.get(peerId)?.namespaces ?? []
  }

  private isLiveHolder (peerId: string, name: string, version: string): boolean {
    if (peerId === this.self) return this.components.models.store.get(name, version) != null
    return this.components.peers.isAdmitted(peerId)
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
    const held = new Set(this.components.models.store.list().map((m) => `${m.name}@${m.version}`))
    for (const model of this.components.models.store.list()) {
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
      this.components.log.warn({ model: `${model.name}@${model.version}`, err: (err as Error).message }, 'could not record a replica')
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
      this.components.log.warn({ err }, 'reconciling replication jobs failed: the next change or the timer tries again')
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
    const { models } = this.components
    for (const job of this.log().jobs()) {
      if (job.state !== 'active') continue
      if (!this.components.trust.own.namespaces.includes(job.namespace)) continue
      if (models.store.get(job.name, job.version) != null) continue
      const holders = this.liveHolders(job)
      if (!placedNodes(job, holders, this.livePeers(), (peer) => this.namespacesOf(peer)).includes(this.self)) continue
      const attempt = this.attempts.get(job.id)
      const previous = attempt == null ? undefined : models.job(attempt.pullId)
      if (previous != null && previous.finishedAt == null) continue
      if (attempt != null && previous?.state === 'failed' && Date.now() - attempt.at < this.retryAfterFailureMs) continue
      const pull = models.startPull(job.name, job.version)
      this.attempts.set(job.id, { pullId: pull.id, at: Date.now() })
      this.components.log.info({ job: job.id, model: `${job.name}@${job.version}`, holders: holders.length, wanted: job.replicas }, 'pulling for a replication job')
    }
  }
}

/** `replicationService({ dir })(components)`: the factory the composition root calls. */
export function replicationService (init: ReplicationInit): (components: ReplicationComponents) => ReplicationService {
  return (components) => new ReplicationService(components, init)
}
