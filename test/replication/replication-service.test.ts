import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { PeerId } from '@libp2p/interface'
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { AdmittedPeers } from '../../node/admission/index.ts'
import type { Host } from '../../node/p2p/index.ts'
import {
  placedNodes, rank, ReplicationError, replicationService,
  type ReplicationComponents, type ReplicationService
} from '../../node/replication/index.ts'
import type { LogRecord, ReplicaRecord, ReplicationJobRecord, SignedRecord } from '../../protocols/replicas.ts'
import { recordKey } from '../../protocols/replicas.ts'
import { certificate, makePeerId } from '../pubsub/fake-gossipsub.ts'

/** The replica log as an in-memory map: a write lands at once and announces a change, as a refresh does. */
class FakeReplicaLog extends EventEmitter<{ change: [] }> {
  readonly view = new Map<string, SignedRecord>()
  writes: LogRecord[] = []
  closed = false

  put (record: LogRecord): void {
    this.view.set(recordKey(record), { record, signer: 'x', cert: '', signature: '' })
  }

  records (): SignedRecord[] { return [...this.view.values()] }
  replicas (): ReplicaRecord[] { return this.records().flatMap(({ record }) => record.kind === 'replica' ? [record] : []) }
  jobs (): ReplicationJobRecord[] { return this.records().flatMap(({ record }) => record.kind === 'job' ? [record] : []) }
  get (key: string): SignedRecord | undefined { return this.view.get(key) }

  async write (record: LogRecord): Promise<void> {
    this.writes.push(record)
    this.put(record)
    this.emit('change')
  }
}

interface Pull { id: string, name: string, version: string | null, state: string, finishedAt: string | null }

/** The model service as replication sees it: a store of held versions, pulls it can start, the catalog. */
class FakeModels extends EventEmitter<{ added: [{ name: string, version: string }], removed: [{ name: string, version: string }] }> {
  held: Array<{ name: string, version: string }> = []
  catalog: string[] = []
  pulls: Pull[] = []
  readonly store = {
    blockstore: {} as any,
    list: () => this.held,
    get: (name: string, version: string) => this.held.find((m) => m.name === name && m.version === version),
    latestVersion: (name: string) => this.held.filter((m) => m.name === name).map((m) => m.version).sort().at(-1) ?? null
  }

  startPull (name: string, version: string | null): Pull {
    const pull = { id: `pull-${this.pulls.length}`, name, version, state: 'running', finishedAt: null }
    this.pulls.push(pull)
    return pull
  }

  job (id: string): Pull | undefined { return this.pulls.find((p) => p.id === id) }
  catalogFor (name: string): Array<{ manifest: { version: string } }> { return this.catalog.map((version) => ({ manifest: { version } })) }
}

const silent = { debug () {}, info () {}, warn () {}, error () {} }
const NS = 'lab'
const at = '2025-01-01T00:00:00.000Z'
const flush = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }
const sha = (jobId: string, peer: string): string => createHash('sha256').update(`${jobId}/${peer}`).digest('hex')

function job (id: string, overrides: Partial<ReplicationJobRecord> = {}): ReplicationJobRecord {
  return { kind: 'job', id, name: 'llama', version: '1.0.0', namespace: NS, replicas: 1, state: 'active', createdBy: 'x', createdAt: at, at, ...overrides }
}

function replica (peerId: string, held = true, version = '1.0.0'): ReplicaRecord {
  return { kind: 'replica', peerId, name: 'llama', version, held, at }
}

describe('placement rule', () => {
  it('ranks by sha256(job id, PeerId), the same on every node', () => {
    expect(rank('j', 'peerA')).toBe(sha('j', 'peerA'))
    expect(rank('j', 'peerA')).not.toBe(rank('k', 'peerA'))
  })

  it('places the first replicas − holders of the ranked non-holders of the namespace', () => {
    const live = ['a', 'b', 'c', 'd', 'e']
    const namespaces: Record<string, string[]> = { a: [NS], b: [NS], c: [NS], d: ['other'], e: [NS] }
    const placed = placedNodes({ id: 'job1', namespace: NS, replicas: 3 }, ['a'], live, (p) => namespaces[p])
    const expected = ['b', 'c', 'e'].sort((x, y) => sha('job1', x).localeCompare(sha('job1', y))).slice(0, 2)
    expect(placed).toEqual(expected)
    expect(placed).not.toContain('a') // already a holder
    expect(placed).not.toContain('d') // not of the namespace
  })

  it('places nobody once enough live holders count, and everyone eligible when too few exist', () => {
    const ns = (): string[] => [NS]
    expect(placedNodes({ id: 'j', namespace: NS, replicas: 2 }, ['a', 'b'], ['a', 'b', 'c'], ns)).toEqual([])
    expect(placedNodes({ id: 'j', namespace: NS, replicas: 3 }, ['a', 'b', 'c'], ['a', 'b', 'c', 'd'], ns)).toEqual([])
    expect(placedNodes({ id: 'j', namespace: NS, replicas: 5 }, [], ['a', 'b'], ns).sort()).toEqual(['a', 'b'])
  })
})

describe('ReplicationService', () => {
  let self: PeerId
  let alice: PeerId
  let bob: PeerId
  let pubsub: EventTarget
  let peers: AdmittedPeers
  let models: FakeModels
  let replicaLog: FakeReplicaLog
  let opens: number
  let own: ReturnType<typeof certificate>
  let components: ReplicationComponents
  let service: ReplicationService

  beforeAll(async () => {
    [self, alice, bob] = await Promise.all([makePeerId(), makePeerId(), makePeerId()])
  })

  beforeEach(() => {
    pubsub = new EventTarget()
    peers = new AdmittedPeers()
    models = new FakeModels()
    replicaLog = new FakeReplicaLog()
    opens = 0
    own = certificate(self, { serial: 'ff', roles: ['admin'], namespaces: [NS] })
    components = {
      // the service itself reads only peerId and services.pubsub; Helia/OrbitDB are replaced below
      host: { peerId: self, services: { pubsub } } as unknown as Host,
      peers,
      trust: { own, caPem: '', crl: null } as unknown as ReplicationComponents['trust'],
      models: models as unknown as ReplicationComponents['models'],
      privateKey: {} as any,
      log: silent,
      openReplicaLog: async () => {
        opens++
        return { replicaLog: replicaLog as any, close: async () => { replicaLog.closed = true } }
      }
    }
    service = replicationService({ dir: '/nowhere' })(components)
  })

  afterEach(async () => {
    vi.restoreAllMocks()
    await service.stop()
  })

  /** a job id (16 hex digits) for which self is, or is not, the best-ranked of `candidates` */
  function jobIdWhere (selfFirst: boolean, candidates: string[]): string {
    for (let i = 0; ; i++) {
      const id = i.toString(16).padStart(16, '0')
      const best = [...candidates].sort((a, b) => sha(id, a).localeCompare(sha(id, b)))[0]
      if ((best === self.toString()) === selfFirst) return id
    }
  }

  it('does not open the log at start without models; a peer subscribing to a replica log topic opens it', async () => {
    await service.start()
    expect(opens).toBe(0)
    pubsub.dispatchEvent(new CustomEvent('subscription-change', { detail: { subscriptions: [{ topic: 'events/lab', subscribe: true }] } }))
    await flush()
    expect(opens).toBe(0)
    pubsub.dispatchEvent(new CustomEvent('subscription-change', { detail: { subscriptions: [{ topic: 'bkg/orbitdb/abc', subscribe: true }] } }))
    await flush()
    expect(opens).toBe(1)
  })

  it('opens the log at start when it holds a model and makes the log say what the store holds', async () => {
    models.held = [{ name: 'llama', version: '1.0.0' }]
    replicaLog.put(replica(self.toString(), true, '0.9.0')) // removed from the store during a crash
    await service.start()
    expect(opens).toBe(1)
    expect(replicaLog.writes).toEqual([
      expect.objectContaining({ kind: 'replica', peerId: self.toString(), name: 'llama', version: '1.0.0', held: true }),
      expect.objectContaining({ kind: 'replica', peerId: self.toString(), name: 'llama', version: '0.9.0', held: false })
    ])
    models.emit('removed', { name: 'llama', version: '1.0.0' })
    await flush()
    expect(replicaLog.get(`replica/${self.toString()}/llama/1.0.0`)?.record).toMatchObject({ held: false })
  })

  it('creates jobs only on an admin node, at the newest version any node holds or announced', async () => {
    own.roles = ['member']
    await expect(service.createJob({ name: 'llama', namespace: NS, replicas: 2 })).rejects.toMatchObject({ code: 'not_admin_node', status: 403 })
    own.roles = ['admin']
    await expect(service.createJob({ name: 'llama', namespace: NS, replicas: 2 })).rejects.toBeInstanceOf(ReplicationError)
    models.catalog = ['1.0.0']
    replicaLog.put(replica(alice.toString(), true, '1.2.0'))
    const created = await service.createJob({ name: 'llama', namespace: NS, replicas: 2 })
    expect(created).toMatchObject({ name: 'llama', version: '1.2.0', namespace: NS, replicas: 2, state: 'replicating', createdBy: self.toString() })
    expect(created.id).toMatch(/^[a-f0-9]{16}$/)
    expect(replicaLog.jobs()).toHaveLength(1)
  })

  it('pulls only when this node is among the first N − holders by rank', async () => {
    peers.admit(alice, certificate(alice, { namespaces: [NS] }))
    peers.admit(bob, certificate(bob, { namespaces: [NS] }))
    const candidates = [self, alice, bob].map(String)
    const mine = jobIdWhere(true, candidates)
    const theirs = jobIdWhere(false, candidates)
    replicaLog.put(job(mine))
    replicaLog.put(job(theirs, { name: 'mistral' }))
    await service.jobs()
    replicaLog.emit('change')
    await flush()
    expect(models.pulls.map((p) => [p.name, p.version])).toEqual([['llama', '1.0.0']])
    expect((await service.job(mine)).pulling).toBe(true)
    expect((await service.job(theirs)).pulling).toBe(false)
  })

  it('counts only live holders of the namespace: a holder that disconnects makes the next node pull', async () => {
    peers.admit(alice, certificate(alice, { namespaces: [NS] }))
    peers.admit(bob, certificate(bob, { namespaces: ['other'] }))
    replicaLog.put(replica(alice.toString()))
    replicaLog.put(replica(bob.toString())) // holds it, but is not of the namespace
    const id = 'aaaaaaaaaaaaaaaa'
    replicaLog.put(job(id, { replicas: 1 }))
    expect(await service.job(id)).toMatchObject({ state: 'done', holders: [alice.toString()], eligible: 2 })
    replicaLog.emit('change')
    await flush()
    expect(models.pulls).toHaveLength(0)

    peers.remove(alice)
    await flush()
    expect(models.pulls.map((p) => p.name)).toEqual(['llama'])
    expect(await service.job(id)).toMatchObject({ state: 'replicating', holders: [], eligible: 1, pulling: true })
    expect(service.holders('llama', '1.0.0').find((h) => h.peerId === alice.toString())?.live).toBe(false)
  })

  it('waits retryAfterFailureMs before pulling again after a failed pull (a refused rollback)', async () => {
    service = replicationService({ dir: '/nowhere', retryAfterFailureMs: 10_000 })(components)
    let now = 1_000_000
    vi.spyOn(Date, 'now').mockImplementation(() => now)
    replicaLog.put(job('bbbbbbbbbbbbbbbb'))
    await service.jobs()
    replicaLog.emit('change')
    await flush()
    expect(models.pulls).toHaveLength(1)
    replicaLog.emit('change')
    await flush()
    expect(models.pulls).toHaveLength(1) // still running
    Object.assign(models.pulls[0], { state: 'failed', finishedAt: at })
    now += 9_999
    replicaLog.emit('change')
    await flush()
    expect(models.pulls).toHaveLength(1)
    now += 1
    replicaLog.emit('change')
    await flush()
    expect(models.pulls).toHaveLength(2)
  })

  it('runs placement on its timer every reconcileIntervalMs, without any change event', async () => {
    service = replicationService({ dir: '/nowhere', reconcileIntervalMs: 20 })(components)
    await service.jobs()
    replicaLog.put(job('cccccccccccccccc')) // no 'change' emitted
    await vi.waitFor(() => { expect(models.pulls).toHaveLength(1) }, { timeout: 1000, interval: 10 })
  })

  it('cancels only the jobs this node created, and a cancelled job places nobody', async () => {
    replicaLog.put(job('dddddddddddddddd', { createdBy: alice.toString() }))
    await expect(service.cancelJob('dddddddddddddddd')).rejects.toMatchObject({ code: 'not_job_owner', status: 403 })
    await expect(service.job('eeeeeeeeeeeeeeee')).rejects.toMatchObject({ code: 'job_not_found', status: 404 })
    const created = await service.createJob({ name: 'llama', version: '2.0.0', namespace: 'other', replicas: 1 })
    const cancelled = await service.cancelJob(created.id)
    expect(cancelled.state).toBe('cancelled')
    expect(replicaLog.jobs().find((j) => j.id === created.id)?.state).toBe('cancelled')
    own.namespaces = [NS, 'other']
    replicaLog.emit('change')
    await flush()
    expect(models.pulls.filter((p) => p.version === '2.0.0')).toHaveLength(0)
  })

  it('stop closes the log and lets go of every listener', async () => {
    await service.jobs()
    expect(peers.listenerCount('admitted')).toBe(1)
    await service.stop()
    expect(replicaLog.closed).toBe(true)
    expect(peers.listenerCount('admitted')).toBe(0)
    expect(peers.listenerCount('removed')).toBe(0)
    expect(models.listenerCount('added')).toBe(0)
    expect(replicaLog.listenerCount('change')).toBe(0)
  })
})
