import { EventEmitter } from 'node:events'
import type { PrivateKey } from '@libp2p/interface'
import { createOrbitDB, useAccessController, type KeyValueDatabase, type LogEntry, type OrbitDB } from '@orbitdb/core'
import type { Logger } from 'pino'
import { parseNodeCertificate } from '../../ca/index.ts'
import { REPLICAS_DATABASE } from '../../protocols/ids.ts'
import { recordKey, SignedRecord, type LogRecord, type ReplicaRecord, type ReplicationJobRecord } from '../../protocols/replicas.ts'
import type { Trust } from '../admission/index.ts'
import { DEFAULT_MAX_VERIFIED_CACHE } from './constants.ts'
import type { BkgHelia } from './helia.ts'
import { orbitdbHost } from './orbitdb-host.ts'
import { isAcceptableOperation, signRecord } from './replica-records.ts'

export interface ReplicaLogDeps {
  helia: BkgHelia
  privateKey: PrivateKey
  /** its own certificate (signs records), the CA (checks entries), the CRL (ignores revoked nodes) */
  trust: Pick<Trust, 'own' | 'caPem' | 'crl'>
  log: Pick<Logger, 'debug' | 'warn'>
  /** entries whose signature check is remembered (default DEFAULT_MAX_VERIFIED_CACHE) */
  maxVerifiedCache?: number
}

export interface ReplicaLogEvents {
  change: []
}

const ACCESS_CONTROLLER_TYPE = 'bkg-certified'

/**
 * Who holds which model versions, and the replication jobs, in an OrbitDB key-value database that
 * every admitted node opens under the same name. OrbitDB syncs it over the node's own host
 * (protocols and topics under `/bkg/`), so only admitted peers ever exchange entries; and every
 * entry must be a record signed by the libp2p key of a node whose certificate chains to the
 * operator CA (see protocols/replicas.ts), checked again by each node that receives it.
 */
export class ReplicaLog extends EventEmitter<ReplicaLogEvents> {
  private readonly dir: string
  private readonly deps: ReplicaLogDeps
  private orbitdb?: OrbitDB
  private db?: KeyValueDatabase
  private view = new Map<string, SignedRecord>()
  private readonly verified = new Map<string, boolean>()
  /** certificate PEM → serial, for the revocation check on every refresh */
  private readonly serials = new Map<string, string>()
  private refreshing: Promise<void> = Promise.resolve()
  private refreshQueued = false

  constructor (dir: string, deps: ReplicaLogDeps) {
    super()
    this.dir = dir
    this.deps = deps
  }

  async start (): Promise<void> {
    const { helia } = this.deps
    const canAppend = async (entry: LogEntry): Promise<boolean> => this.canAppend(entry)
    const controller = Object.assign(() => async () => ({ type: ACCESS_CONTROLLER_TYPE, address: `/${ACCESS_CONTROLLER_TYPE}/1`, write: ['*'], canAppend }), { type: ACCESS_CONTROLLER_TYPE })
    useAccessController(controller)
    this.orbitdb = await createOrbitDB({
      ipfs: { libp2p: orbitdbHost(helia.libp2p), blockstore: helia.blockstore, pins: helia.pins },
      id: this.deps.helia.libp2p.peerId.toString(),
      directory: this.dir
    })
    this.db = await this.orbitdb.open(REPLICAS_DATABASE, { type: 'keyvalue', AccessController: controller() })
    this.db.events.on('update', () => this.refresh())
    this.db.events.on('error', (err: Error) => this.deps.log.debug({ err: err.message }, 'replica log sync'))
    await this.refresh()
  }

  async stop (): Promise<void> {
    await this.refreshing
    await this.orbitdb?.stop()
    this.orbitdb = undefined
    this.db = undefined
  }

  /** Every valid record, by key. */
  records (): SignedRecord[] {
    return [...this.view.values()]
  }

  replicas (): ReplicaRecord[] {
    return this.records().map((r) => r.record).filter((r): r is ReplicaRecord => r.kind === 'replica')
  }

  jobs (): ReplicationJobRecord[] {
    return this.records().map((r) => r.record).filter((r): r is ReplicationJobRecord => r.kind === 'job')
  }

  get (key: string): SignedRecord | undefined {
    return this.view.get(key)
  }

  /** Signs a record with this node's key and appends it; the view is updated before it returns. */
  async write (record: LogRecord): Promise<void> {
    if (this.db == null) throw new Error('the replica log is not started')
    const signed = await signRecord(record, { privateKey: this.deps.privateKey, peerId: this.deps.helia.libp2p.peerId.toString(), certPem: this.deps.trust.own.pem })
    await this.db.put(recordKey(record), signed)
    await this.refresh()
  }

  /** Stable over time: revocation and expiry at read time are the readers' concern (a log must stay joinable). */
  private async canAppend (entry: LogEntry): Promise<boolean> {
    const cached = this.verified.get(entry.hash)
    if (cached != null) return cached
    const ok = await isAcceptableOperation(entry.payload, this.deps.trust.caPem)
    if (this.verified.size >= (this.deps.maxVerifiedCache ?? DEFAULT_MAX_VERIFIED_CACHE)) this.verified.clear()
    if (entry.hash != null) this.verified.set(entry.hash, ok)
    if (!ok) this.deps.log.warn({ key: entry.payload?.key }, 'refused a replica log entry')
    return ok
  }

  /** Rebuilds the view from the database; coalesces bursts of updates into one pass. */
  private async refresh (): Promise<void> {
    if (this.refreshQueued) return await this.refreshing
    this.refreshQueued = true
    this.refreshing = this.refreshing.then(async () => {
      this.refreshQueued = false
      if (this.db == null) return
      const next = new Map<string, SignedRecord>()
      for (const { key, value } of await this.db.all()) {
        const parsed = SignedRecord.safeParse(value)
        // revoked writers no longer count, though their entries stay in the log
        if (parsed.success && !this.revoked(parsed.data.cert)) next.set(key, parsed.data)
      }
      this.view = next
      this.emit('change')
    }).catch((err: unknown) => { this.deps.log.warn({ err }, 'replica log refresh failed') })
    await this.refreshing
  }

  private revoked (certPem: string): boolean {
    const crl = this.deps.trust.crl
    if (crl == null) return false
    let serial = this.serials.get(certPem)
    if (serial == null) {
      try {
        serial = parseNodeCertificate(certPem).serial
      } catch {
        // a certificate that does not parse cannot be checked against the CRL: its records do not count
        return true
      }
      this.serials.set(certPem, serial)
    }
    return crl.revoked.has(serial)
  }
}
