import type { Logger } from 'pino'
import { startAll, stopAll, type Named, type Startable } from '../lib/startable.ts'
import type { Trust } from './admission/index.ts'
import type { ApiServices } from './api/server.ts'
import type { CentralSyncService } from './central/index.ts'
import type { NodeConfig } from './config/index.ts'
import type { Database, PsqlAccess } from './db/index.ts'
import type { DataDirLock, DataDirPaths } from './identity/index.ts'
import { reachabilityOf, routingTableSize, type Host, type ReachabilityReport } from './p2p/index.ts'
import { VERSION } from './version.ts'

type CentralStatus = ReturnType<CentralSyncService['status']>

export interface NodeInfo {
  peerId: string
  name: string
  addrs: string[]
  cert: { roles: string[], namespaces: string[], notAfter: string, serial: string }
  reachability: ReachabilityReport['reachability']
  addresses: ReachabilityReport['addresses']
  dht: { routingTableSize: number }
  version: string
}

/** The parts of a node other code reaches: its services by name, and what it is built on. */
export interface NodeParts {
  paths: DataDirPaths
  config: NodeConfig
  log: Logger
  trust: Trust
  host: Host
  db: Database
  services: ApiServices
  centralSync: CentralSyncService | null
  psql: PsqlAccess | null
  /** every part in start order, as `startAll` takes it (stop runs in reverse) */
  lifecycle: Named<unknown>
  lock: DataDirLock
}

/**
 * One BKG node, built by createNode: it starts its parts in the order of its lifecycle table and
 * stops them in reverse (every part, even when one fails), and tells its own status.
 */
export class BkgNode {
  readonly paths: DataDirPaths
  readonly config: NodeConfig
  readonly log: Logger
  readonly trust: Trust
  readonly host: Host
  readonly services: ApiServices
  private readonly db: Database
  private readonly centralSync: CentralSyncService | null
  private readonly psql: PsqlAccess | null
  private readonly lifecycle: Named<unknown>
  private readonly lock: DataDirLock
  private started: Named<Startable> = []
  /** set by the api part when it listens */
  apiUrl?: string

  constructor (parts: NodeParts) {
    this.paths = parts.paths
    this.config = parts.config
    this.log = parts.log
    this.trust = parts.trust
    this.host = parts.host
    this.db = parts.db
    this.services = parts.services
    this.centralSync = parts.centralSync
    this.psql = parts.psql
    this.lifecycle = parts.lifecycle
    this.lock = parts.lock
  }

  get peerId (): string {
    return this.host.peerId.toString()
  }

  get name (): string {
    return this.config.name ?? this.trust.own.name
  }

  /** URL of the running HTTP API */
  get url (): string {
    if (this.apiUrl == null) throw new Error('the node is not started')
    return this.apiUrl
  }

  async start (): Promise<void> {
    try {
      this.started = await startAll(this.lifecycle)
    } catch (err) {
      // startAll stopped what had started: a node that did not come up holds nothing
      await this.lock.release()
      throw err
    }
    this.log.info({ peerId: this.peerId, api: this.apiUrl, addrs: this.host.getMultiaddrs().map(String) }, 'node started')
  }

  async stop (): Promise<void> {
    const failures = await stopAll(this.started)
    for (const failure of failures) this.log.error({ err: failure.cause, service: failure.service }, failure.message)
    this.started = []
    await this.lock.release()
    this.log.info('node stopped')
  }

  /** What the embedded database is doing: open or not, central sync, change stream, psql. */
  databaseStatus (): { open: boolean, sync: CentralStatus['sync'] | null, changes: CentralStatus['changes'], psql: string | null } {
    const central = this.centralSync?.status()
    return { open: this.db.isOpen, sync: central?.sync ?? null, changes: central?.changes ?? null, psql: this.psql?.endpoint?.command ?? null }
  }

  info (): NodeInfo {
    const own = this.trust.own
    const reach = reachabilityOf(this.host)
    return {
      peerId: this.peerId,
      name: this.name,
      addrs: this.host.getMultiaddrs().map(String),
      cert: { roles: own.roles, namespaces: own.namespaces, notAfter: own.notAfter.toISOString(), serial: own.serial },
      reachability: reach.reachability,
      addresses: reach.addresses,
      dht: { routingTableSize: routingTableSize(this.host) },
      version: VERSION
    }
  }
}
