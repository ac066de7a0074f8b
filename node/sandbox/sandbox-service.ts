import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { BkgError } from '../../lib/bkg-error.ts'
import type { Startable } from '../../lib/startable.ts'
import type { Principal } from '../auth/index.ts'
import {
  DEFAULT_MAX_SNAPSHOTS, DEFAULT_QUOTA_CONCURRENT_RUNS, DEFAULT_QUOTA_MEMORY_BYTES, DEFAULT_QUOTA_SANDBOXES, DEFAULT_SHUTDOWN_SAVE_MS, MAX_FORKS,
  METRICS_SAVE_MS
} from './constants.ts'
import { checkRunInput } from './input.ts'
import { NODE_POLICY_LIMITS, resolvePolicy, type PolicyLimits } from './policy.ts'
import { SandboxRegistry, type SandboxRecord } from './registry.ts'
import type { Language, PersistentGuest, RunRequest, SandboxImage, SandboxRuntime } from './runtime/types.ts'
import { SnapshotStore } from './snapshot-store.ts'
import type {
  ExecInput, ExecOptions, ExecResult, SandboxInfo, SandboxMode, SandboxPolicy, SandboxService as SandboxServiceApi, SnapshotInfo
} from './types.ts'

export interface SandboxQuotas {
  /** sandboxes a namespace may have */
  sandboxes: number
  /** memory caps of a namespace's running guests together */
  memoryBytes: number
  /** runs of a namespace at once */
  concurrentRuns: number
}

export interface SandboxServiceInit {
  /** `<data>/sandboxes`: the registry, snapshots and their pages */
  dir: string
  limits?: PolicyLimits
  quotas?: Partial<SandboxQuotas>
  maxSnapshots?: number
  shutdownSaveMs?: number
  /**
   * start the runtime (its warm pool) with the service; otherwise it starts at the first run, so
   * a node that never runs code carries no sandbox workers
   */
  warmAtStart?: boolean
}

export interface SandboxServiceComponents {
  runtime: Pick<SandboxRuntime, 'runOnce' | 'openPersistent' | 'start'>
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>
}

/** A persistent sandbox's guest while it runs here. */
interface LiveGuest {
  guest: PersistentGuest
  running: boolean
}

/**
 * `sandboxService({ dir })({ runtime, log })`: the node's sandboxes, by namespace. Quick
 * sandboxes run each exec in a fresh guest from the runtime's warm pool; persistent ones keep one
 * guest whose state can be snapshotted (content-addressed on disk), restored and forked, and
 * which comes back from its last snapshot after `stop`, a limit breach or a node restart.
 */
export function sandboxService (init: SandboxServiceInit): (components: SandboxServiceComponents) => SandboxService {
  return (components) => new SandboxService(init, components)
}

export class SandboxService implements SandboxServiceApi, Startable {
  private readonly dir: string
  private readonly limits: PolicyLimits
  private readonly quotas: SandboxQuotas
  private readonly maxSnapshots: number
  private readonly shutdownSaveMs: number
  private readonly runtime: SandboxServiceComponents['runtime']
  private readonly log: SandboxServiceComponents['log']
  private readonly registry: SandboxRegistry
  private readonly snapshots: SnapshotStore
  private readonly records = new Map<string, SandboxRecord>()
  private readonly live = new Map<string, LiveGuest>()
  /** guests being opened, so two calls never open two guests for one sandbox */
  private readonly opening = new Map<string, Promise<LiveGuest>>()
  private readonly runs = new Map<string, number>()
  private readonly memoryInUse = new Map<string, number>()
  private metricsTimer: NodeJS.Timeout | undefined
  private readonly warmAtStart: boolean
  private runtimeStarted: Promise<void> | undefined

  constructor (init: SandboxServiceInit, components: SandboxServiceComponents) {
    this.dir = init.dir
    this.limits = init.limits ?? NODE_POLICY_LIMITS
    this.quotas = {
      sandboxes: init.quotas?.sandboxes ?? DEFAULT_QUOTA_SANDBOXES,
      memoryBytes: init.quotas?.memoryBytes ?? DEFAULT_QUOTA_MEMORY_BYTES,
      concurrentRuns: init.quotas?.concurrentRuns ?? DEFAULT_QUOTA_CONCURRENT_RUNS
    }
    this.maxSnapshots = init.maxSnapshots ?? DEFAULT_MAX_SNAPSHOTS
    this.shutdownSaveMs = init.shutdownSaveMs ?? DEFAULT_SHUTDOWN_SAVE_MS
    this.warmAtStart = init.warmAtStart ?? false
    this.runtime = components.runtime
    this.log = components.log
    this.registry = new SandboxRegistry(join(init.dir, 'sandboxes.json'))
    this.snapshots = new SnapshotStore(init.dir)
  }

  async start (): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    await this.snapshots.start()
    // guests come back lazily, from their last snapshot, when they are next used
    for (const record of await this.registry.load()) this.records.set(record.id, record)
    if (this.records.size > 0) this.log.info({ sandboxes: this.records.size }, 'sandboxes loaded')
    if (this.warmAtStart) await this.runtimeReady()
  }

  /** The runtime, started once (its warm pool filled) before the first run needs it. */
  private async runtimeReady (): Promise<void> {
    this.runtimeStarted ??= this.runtime.start().catch((err: unknown) => {
      this.runtimeStarted = undefined
      throw err
    })
    await this.runtimeStarted
  }

  /** Saves every idle persistent guest as a snapshot (within shutdownSaveMs), then ends all guests. */
  async stop (): Promise<void> {
    const deadline = Date.now() + this.shutdownSaveMs
    for (const [id, live] of [...this.live]) {
      const record = this.records.get(id)
      if (record != null && !live.running && Date.now() < deadline) {
        await this.takeSnapshot(record, live).catch((err: unknown) => this.log.warn({ err, sandbox: id }, 'could not save a sandbox before stopping; it comes back from its last snapshot'))
      }
      await this.closeGuest(id)
    }
    clearTimeout(this.metricsTimer)
    this.metricsTimer = undefined
    await this.saveRegistry()
  }

  async run (principal: Principal, input: ExecInput & { namespace?: string, language: Language, policy?: Partial<SandboxPolicy> }, options: ExecOptions = {}): Promise<ExecResult> {
    const namespace = this.namespaceFor(principal, input.namespace)
    this.requireWriter(principal)
    const policy = resolvePolicy(input.policy, this.limits)
    const request = this.runRequest(input.language, input, policy)
    return await this.withRunSlot(namespace, policy.memoryBytes, async () => {
      await this.runtimeReady()
      return await this.runtime.runOnce(input.language, request, options)
    })
  }

  async create (principal: Principal, input: { namespace?: string, language: Language, mode: SandboxMode, policy?: Partial<SandboxPolicy> }): Promise<SandboxInfo> {
    const namespace = this.namespaceFor(principal, input.namespace)
    this.requireWriter(principal)
    const policy = resolvePolicy(input.policy, this.limits)
    this.checkSandboxQuota(namespace, 1)
    const record = this.newRecord(namespace, input.language, input.mode, policy, null)
    this.records.set(record.id, record)
    await this.saveRegistry()
    this.log.info({ sandbox: record.id, namespace, language: record.language, mode: record.mode }, 'sandbox created')
    return this.info(record)
  }

  async exec (principal: Principal, id: string, input: ExecInput, options: ExecOptions = {}): Promise<ExecResult> {
    const record = this.find(principal, id, 'write')
    const request = this.runRequest(record.language, input, record.policy)
    if (record.mode === 'quick') {
      const result = await this.withRunSlot(record.namespace, record.policy.memoryBytes, async () => {
        await this.runtimeReady()
        return await this.runtime.runOnce(record.language, request, options)
      })
      this.account(record, result)
      return result
    }
    return await this.withRunSlot(record.namespace, 0, async () => {
      const live = await this.guestOf(record)
      if (live.running) throw new BkgError('sandbox_busy', 409, `sandbox ${id} is running code; wait for it or stop it`)
      live.running = true
      let result: ExecResult
      try {
        result = await live.guest.run(request, options)
      } catch (err) {
        // the guest's worker failed under us: its state is gone, the sandbox resumes from its last snapshot
        await this.closeGuest(id)
        throw err
      } finally {
        live.running = false
      }
      if (result.reason != null) {
        // a run ended from outside may have left the guest half-way (its worker may be gone): start over from the last snapshot
        this.log.info({ sandbox: id, reason: result.reason }, 'run ended by a limit; the sandbox resumes from its last snapshot')
        await this.closeGuest(id)
      }
      this.account(record, result)
      return result
    })
  }

  async snapshot (principal: Principal, id: string): Promise<SnapshotInfo> {
    const record = this.persistent(this.find(principal, id, 'write'))
    const live = await this.guestOf(record)
    if (live.running) throw new BkgError('sandbox_busy', 409, `sandbox ${id} is running code; a snapshot is taken between runs`)
    return await this.takeSnapshot(record, live)
  }

  async restore (principal: Principal, id: string, snapshotId: string): Promise<SandboxInfo> {
    const record = this.persistent(this.find(principal, id, 'write'))
    if (!this.lineageOf(record).has(snapshotId)) throw new BkgError('snapshot_not_found', 404, `sandbox ${id} has no snapshot ${snapshotId}`)
    const image = await this.snapshots.load(snapshotId)
    const live = this.live.get(id)
    if (live?.running === true) throw new BkgError('sandbox_busy', 409, `sandbox ${id} is running code; restore between runs`)
    if (live != null) {
      await live.guest.restore(image)
    } else {
      await this.guestOf(record, image)
    }
    record.resumeFrom = snapshotId
    await this.saveRegistry()
    return this.info(record)
  }

  async fork (principal: Principal, id: string, input: { snapshotId?: string, count?: number }): Promise<SandboxInfo[]> {
    const record = this.persistent(this.find(principal, id, 'write'))
    const count = input.count ?? 1
    if (!Number.isInteger(count) || count < 1 || count > MAX_FORKS) throw new BkgError('invalid_input', 400, `count: 1 to ${MAX_FORKS} forks per call`)
    this.checkSandboxQuota(record.namespace, count)
    let snapshotId = input.snapshotId
    if (snapshotId == null) {
      const live = await this.guestOf(record)
      if (live.running) throw new BkgError('sandbox_busy', 409, `sandbox ${id} is running code; fork between runs or from a snapshot`)
      snapshotId = (await this.takeSnapshot(record, live)).id
    } else if (!this.lineageOf(record).has(snapshotId)) {
      throw new BkgError('snapshot_not_found', 404, `sandbox ${id} has no snapshot ${snapshotId}`)
    }
    const image = await this.snapshots.load(snapshotId)
    const forks = Array.from({ length: count }, () => this.newRecord(record.namespace, record.language, 'persistent', record.policy, snapshotId))
    for (const fork of forks) this.records.set(fork.id, fork)
    try {
      // every fork gets a guest of its own now, each restored from the same image
      await Promise.all(forks.map(async (fork) => await this.guestOf(fork, image)))
    } catch (err) {
      for (const fork of forks) {
        await this.closeGuest(fork.id)
        this.records.delete(fork.id)
      }
      throw err
    }
    await this.saveRegistry()
    this.log.info({ sandbox: id, snapshot: snapshotId, forks: count }, 'sandbox forked')
    return forks.map((fork) => this.info(fork))
  }

  async stopSandbox (principal: Principal, id: string): Promise<SandboxInfo> {
    const record = this.find(principal, id, 'write')
    const live = this.live.get(id)
    if (live != null) {
      if (live.running) throw new BkgError('sandbox_busy', 409, `sandbox ${id} is running code; stop it when the run has ended`)
      await this.takeSnapshot(record, live)
      await this.closeGuest(id)
    }
    return this.info(record)
  }

  async remove (principal: Principal, id: string): Promise<void> {
    const record = this.find(principal, id, 'write')
    await this.closeGuest(id)
    this.records.delete(id)
    await this.saveRegistry()
    // its snapshots go, except those a fork still comes from
    const stillUsed = new Set<string>()
    for (const other of this.records.values()) for (const snapshot of this.lineageOf(other)) stillUsed.add(snapshot)
    const unused = [...this.lineageOf(record)].filter((snapshot) => !stillUsed.has(snapshot))
    if (unused.length > 0) await this.snapshots.remove(unused)
    this.log.info({ sandbox: id }, 'sandbox removed')
  }

  list (principal: Principal): SandboxInfo[] {
    return [...this.records.values()].filter((record) => this.visible(principal, record)).map((record) => this.info(record))
  }

  get (principal: Principal, id: string): SandboxInfo {
    return this.info(this.find(principal, id, 'read'))
  }

  private info (record: SandboxRecord): SandboxInfo {
    const live = this.live.get(record.id)
    const state = record.mode === 'quick' ? 'idle' : live == null ? 'stopped' : live.running ? 'running' : 'idle'
    return {
      id: record.id,
      namespace: record.namespace,
      language: record.language,
      mode: record.mode,
      policy: record.policy,
      state,
      createdAt: record.createdAt,
      metrics: { ...record.metrics },
      snapshots: record.snapshots.map((snapshot) => ({ ...snapshot })),
      origin: record.origin
    }
  }

  private newRecord (namespace: string, language: Language, mode: SandboxMode, policy: SandboxPolicy, origin: string | null): SandboxRecord {
    return {
      id: `sbx_${randomBytes(8).toString('hex')}`,
      namespace,
      language,
      mode,
      policy,
      createdAt: new Date().toISOString(),
      metrics: { cpuMs: 0, peakMemoryBytes: 0, executions: 0, snapshots: 0 },
      snapshots: [],
      origin,
      resumeFrom: origin
    }
  }

  private runRequest (language: Language, input: ExecInput, policy: SandboxPolicy): RunRequest {
    checkRunInput(language, input, policy)
    return {
      code: input.code,
      module: input.module,
      stdin: input.stdin,
      files: input.files,
      args: input.args,
      env: policy.env,
      limits: { timeoutMs: Math.min(input.timeoutMs ?? policy.timeoutMs, policy.timeoutMs), memoryBytes: policy.memoryBytes, outputBytes: policy.outputBytes }
    }
  }

  private account (record: SandboxRecord, result: ExecResult): void {
    record.metrics.executions++
    record.metrics.cpuMs += result.cpuMs
    record.metrics.peakMemoryBytes = Math.max(record.metrics.peakMemoryBytes, result.memoryBytes)
    this.saveMetricsSoon()
  }

  /** Metrics are saved at most once a second (and at stop): a synced write per exec would cost more than the run. */
  private saveMetricsSoon (): void {
    if (this.metricsTimer != null) return
    this.metricsTimer = setTimeout(() => {
      this.metricsTimer = undefined
      this.saveRegistry().catch((err: unknown) => this.log.warn({ err }, 'could not save the sandbox registry'))
    }, METRICS_SAVE_MS)
    this.metricsTimer.unref()
  }

  /** The sandbox's guest, opened if it is not running here: from `image`, else from where the sandbox resumes. */
  private async guestOf (record: SandboxRecord, image?: SandboxImage): Promise<LiveGuest> {
    const live = this.live.get(record.id)
    if (live != null) return live
    let opening = this.opening.get(record.id)
    if (opening == null) {
      opening = this.openGuest(record, image).finally(() => this.opening.delete(record.id))
      this.opening.set(record.id, opening)
    }
    return await opening
  }

  private async openGuest (record: SandboxRecord, image?: SandboxImage): Promise<LiveGuest> {
    const inUse = this.memoryInUse.get(record.namespace) ?? 0
    if (inUse + record.policy.memoryBytes > this.quotas.memoryBytes) {
      throw new BkgError('quota_exceeded', 429, `namespace ${record.namespace}: running sandboxes would hold more than ${this.quotas.memoryBytes} bytes of memory; stop one first`)
    }
    this.memoryInUse.set(record.namespace, inUse + record.policy.memoryBytes)
    try {
      await this.runtimeReady()
      const from = image ?? (record.resumeFrom != null ? await this.snapshots.load(record.resumeFrom) : undefined)
      const guest = await this.runtime.openPersistent(record.language, { memoryBytes: record.policy.memoryBytes, image: from })
      const live: LiveGuest = { guest, running: false }
      this.live.set(record.id, live)
      return live
    } catch (err) {
      this.releaseMemory(record.namespace, record.policy.memoryBytes)
      throw err
    }
  }

  private async closeGuest (id: string): Promise<void> {
    const live = this.live.get(id)
    if (live == null) return
    this.live.delete(id)
    const record = this.records.get(id)
    if (record != null) this.releaseMemory(record.namespace, record.policy.memoryBytes)
    await live.guest.close().catch((err: unknown) => this.log.warn({ err, sandbox: id }, 'closing a sandbox guest failed'))
  }

  private releaseMemory (namespace: string, bytes: number): void {
    this.memoryInUse.set(namespace, Math.max(0, (this.memoryInUse.get(namespace) ?? 0) - bytes))
  }

  private async takeSnapshot (record: SandboxRecord, live: LiveGuest): Promise<SnapshotInfo> {
    live.running = true
    let image: SandboxImage
    try {
      image = await live.guest.image()
    } finally {
      live.running = false
    }
    const id = `snap_${randomBytes(8).toString('hex')}`
    const saved = await this.snapshots.save(id, image)
    const snapshot: SnapshotInfo = { id, createdAt: new Date().toISOString(), ...saved }
    record.snapshots.push(snapshot)
    record.metrics.snapshots++
    record.resumeFrom = id
    await this.forgetOldSnapshots(record)
    await this.saveRegistry()
    this.log.debug({ sandbox: record.id, snapshot: id, memoryBytes: saved.memoryBytes, storedBytes: saved.storedBytes }, 'sandbox snapshot')
    return snapshot
  }

  /** Beyond maxSnapshots the oldest go, unless the sandbox resumes from one or a fork comes from it. */
  private async forgetOldSnapshots (record: SandboxRecord): Promise<void> {
    if (record.snapshots.length <= this.maxSnapshots) return
    const pinned = new Set<string>()
    for (const other of this.records.values()) {
      if (other.origin != null) pinned.add(other.origin)
      if (other.resumeFrom != null) pinned.add(other.resumeFrom)
    }
    const drop: string[] = []
    for (const snapshot of record.snapshots) {
      if (record.snapshots.length - drop.length <= this.maxSnapshots) break
      if (!pinned.has(snapshot.id)) drop.push(snapshot.id)
    }
    record.snapshots = record.snapshots.filter((snapshot) => !drop.includes(snapshot.id))
    await this.snapshots.remove(drop)
  }

  /** The snapshots a sandbox may be restored to or forked from: its own and the one it was forked from. */
  private lineageOf (record: SandboxRecord): Set<string> {
    const ids = new Set(record.snapshots.map((snapshot) => snapshot.id))
    if (record.origin != null) ids.add(record.origin)
    return ids
  }

  private async withRunSlot<T> (namespace: string, memoryBytes: number, fn: () => Promise<T>): Promise<T> {
    const running = this.runs.get(namespace) ?? 0
    if (running >= this.quotas.concurrentRuns) throw new BkgError('quota_exceeded', 429, `namespace ${namespace} already runs ${running} sandboxes at once (its limit)`)
    const inUse = this.memoryInUse.get(namespace) ?? 0
    if (inUse + memoryBytes > this.quotas.memoryBytes) throw new BkgError('quota_exceeded', 429, `namespace ${namespace}: this run would hold more than ${this.quotas.memoryBytes} bytes of sandbox memory`)
    this.runs.set(namespace, running + 1)
    this.memoryInUse.set(namespace, inUse + memoryBytes)
    try {
      return await fn()
    } finally {
      this.runs.set(namespace, (this.runs.get(namespace) ?? 1) - 1)
      this.releaseMemory(namespace, memoryBytes)
    }
  }

  private checkSandboxQuota (namespace: string, adding: number): void {
    const count = [...this.records.values()].filter((record) => record.namespace === namespace).length
    if (count + adding > this.quotas.sandboxes) throw new BkgError('quota_exceeded', 429, `namespace ${namespace} has ${count} sandboxes; its limit is ${this.quotas.sandboxes}`)
  }

  private persistent (record: SandboxRecord): SandboxRecord {
    if (record.mode !== 'persistent') throw new BkgError('not_persistent', 409, `sandbox ${record.id} is a quick sandbox: it keeps no state to snapshot, restore or fork`)
    return record
  }

  private visible (principal: Principal, record: SandboxRecord): boolean {
    return principal.kind === 'node-admin' || principal.namespace === record.namespace
  }

  private find (principal: Principal, id: string, access: 'read' | 'write'): SandboxRecord {
    const record = this.records.get(id)
    // another namespace's sandbox is not found, not forbidden: its id tells nothing
    if (record == null || !this.visible(principal, record)) throw new BkgError('sandbox_not_found', 404, `no sandbox ${id}`)
    if (access === 'write') this.requireWriter(principal)
    return record
  }

  private requireWriter (principal: Principal): void {
    if (principal.role === 'reader') throw new BkgError('forbidden', 403, 'a reader token may list and inspect sandboxes; running code needs a writer or admin token')
  }

  private namespaceFor (principal: Principal, requested: string | undefined): string {
    if (principal.kind === 'node-admin') return requested ?? 'default'
    if (requested != null && requested !== principal.namespace) throw new BkgError('forbidden', 403, `this token is for namespace ${principal.namespace}, not ${requested}`)
    return principal.namespace
  }

  private async saveRegistry (): Promise<void> {
    await this.registry.save(() => [...this.records.values()])
  }
}
