import { createHash } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { readBootstrapList } from '../bootstrap/list.ts'
import { AdmittedPeers, Trust } from './admission/index.ts'
import { revocationService, type RevocationService } from './revocation/index.ts'
import { createApiServer, type ApiServer } from './api/server.ts'
import { decideApiTransport, loadApiTlsOptions, requireAdminClientCertificate } from './api/tls.ts'
import type { NodeConfig } from './config/schema.ts'
import type { CentralChanges } from './db/central-changes.ts'
import type { CentralSync } from './db/central-sync.ts'
import { Database, defaultTemplateDir } from './db/database.ts'
import { PsqlAccess } from './db/psql-access.ts'
import { EventService } from './events/index.ts'
import { roomHub, type RoomHub } from './events/index.ts'
import { StorageService } from './storage/index.ts'
import { dataDirPaths, loadLibp2pKey, loadOrCreateSecret, type DataDirPaths } from './identity/data-dir.ts'
import { DataDirLock } from './identity/data-dir-lock.ts'
import { writeFileAtomic } from '../lib/fs.ts'
import { NodeMetrics, topicFamily } from './metrics/index.ts'
import { ModelService } from './models/index.ts'
import { ReplicationService } from './replication/index.ts'
import { Bootstrapper, createHost, routingTableSize, type Host, reachabilityOf, type ReachabilityReport } from './p2p/index.ts'
import { pubsubService, type PubsubService, guardNamespaceTopics } from './pubsub/index.ts'
import { peerDirectory } from './peers/index.ts'
import { VERSION } from './version.ts'
import { BkgError } from '../lib/bkg-error.ts'

export interface NodeInit {
  dataDir: string
  config: NodeConfig
  log: Logger
}

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

export class NodeIdentityError extends BkgError {
  constructor (message: string) {
    super('identity_mismatch', 500, message)
  }
}

/** A listen or API address another process holds: an operator's choice to fix, not a crash. */
export class AddressInUseError extends BkgError {
  constructor (message: string, options?: ErrorOptions) {
    super('address_in_use', 500, message, options)
  }
}

/** Any other address the node cannot listen on (not local, no permission, unsupported). */
export class ListenError extends BkgError {
  constructor (message: string, options?: ErrorOptions) {
    super('listen_failed', 500, message, options)
  }
}

/**
 * One BKG node: the composition root that wires trust, admission, the libp2p host, revocation,
 * pub/sub, models, events and their database, bootstrap and the HTTP API together, and starts and stops them in order.
 */
export class BkgNode {
  readonly paths: DataDirPaths
  readonly config: NodeConfig
  readonly log: Logger
  readonly trust: Trust
  readonly peers: AdmittedPeers
  readonly metrics: NodeMetrics
  readonly host: Host
  readonly revocation: RevocationService
  readonly pubsub: PubsubService
  readonly models: ModelService
  readonly replication: ReplicationService
  readonly db: Database
  readonly events: EventService
  readonly rooms: RoomHub
  readonly storage: StorageService
  /** copies events to the central PostgreSQL (`--sync`), when configured */
  readonly centralSync: CentralSync | null
  readonly psql: PsqlAccess | null
  private centralChanges: CentralChanges | null = null
  private psqlCommand: string | null = null
  /** set by createNode once the node exists (the API serves the node's own status) */
  api!: ApiServer
  private readonly bootstrapper: Bootstrapper
  private apiUrl?: string
  /** the data dir's lock, held from createNode until stop */
  lock: DataDirLock | null = null

  constructor (parts: {
    paths: DataDirPaths,
    config: NodeConfig,
    log: Logger,
    trust: Trust,
    peers: AdmittedPeers,
    metrics: NodeMetrics,
    host: Host,
    revocation: RevocationService,
    pubsub: PubsubService,
    models: ModelService,
    replication: ReplicationService,
    db: Database,
    events: EventService,
    rooms: RoomHub,
    storage: StorageService,
    centralSync: CentralSync | null,
    psql: PsqlAccess | null,
    bootstrapper: Bootstrapper
  }) {
    this.paths = parts.paths
    this.config = parts.config
    this.log = parts.log
    this.trust = parts.trust
    this.peers = parts.peers
    this.metrics = parts.metrics
    this.host = parts.host
    this.revocation = parts.revocation
    this.pubsub = parts.pubsub
    this.models = parts.models
    this.replication = parts.replication
    this.db = parts.db
    this.events = parts.events
    this.rooms = parts.rooms
    this.storage = parts.storage
    this.centralSync = parts.centralSync
    this.psql = parts.psql
    this.bootstrapper = parts.bootstrapper
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
      await this.host.start()
    } catch (err) {
      throw describeListenFailure(err, '--listen')
    }
    this.revocation.start()
    this.pubsub.start()
    await this.models.start()
    await this.events.start()
    this.rooms.start()
    await this.storage.start()
    if (this.psql != null) {
      this.psqlCommand = (await this.psql.start()).command
      this.log.info({ command: this.psqlCommand }, 'psql access to the embedded database')
    }
    try {
      this.apiUrl = await this.api.listen(this.config.api)
    } catch (err) {
      throw describeListenFailure(err, '--api', this.config.api)
    }
    await writeFileAtomic(this.paths.apiAddress, JSON.stringify({ url: this.apiUrl, pid: process.pid, peerId: this.peerId }) + '\n')
    // joining happens in the background: the API answers (health, reachability) while dials run
    void this.bootstrapper.start().catch((err: Error) => this.log.error({ err }, 'bootstrap failed'))
    // the replica log (OrbitDB) opens after joining has begun (and only once needed): admission does not wait for it
    void this.replication.start().catch(() => {})
    if (this.centralSync != null) this.startCentralSync(this.centralSync)
    this.log.info({ peerId: this.peerId, api: this.apiUrl, addrs: this.host.getMultiaddrs().map(String) }, 'node started')
  }

  async stop (): Promise<void> {
    await this.bootstrapper.stop().catch((err: Error) => this.log.warn({ err }, 'could not save the peer cache'))
    await this.removeApiAddress()
    await this.api.close()
    await this.replication.stop()
    this.rooms.stop()
    await this.centralChanges?.close()
    await this.centralSync?.stop()
    await this.psql?.stop()
    await this.events.stop()
    await this.storage.stop()
    await this.db.close()
    await this.models.stop()
    this.pubsub.stop()
    this.revocation.stop()
    await this.host.stop()
    await this.lock?.release()
    this.log.info('node stopped')
  }

  /** Only the address this node wrote: never a file another process put there. */
  private async removeApiAddress (): Promise<void> {
    try {
      const written = JSON.parse(await readFile(this.paths.apiAddress, 'utf8')) as { pid?: number }
      if (written.pid !== process.pid || this.apiUrl == null) return
    } catch {
      return
    }
    await rm(this.paths.apiAddress, { force: true })
  }

  /** What the embedded database is doing: open or not, central sync, change stream, psql. */
  databaseStatus (): { open: boolean, sync: ReturnType<CentralSync['status']> | null, changes: ReturnType<CentralChanges['status']> | null, psql: string | null } {
    return { open: this.db.isOpen, sync: this.centralSync?.status() ?? null, changes: this.centralChanges?.status() ?? null, psql: this.psqlCommand }
  }

  /** The sync needs the database open; stored events wake it, and (if asked) central inserts flow back in. */
  private startCentralSync (sync: CentralSync): void {
    this.events.on('stored', () => sync.notify())
    void this.events.ready().then(async () => {
      sync.start()
      if (this.config.sync.changes && this.config.sync.url != null) {
        const { subscribeCentralChanges } = await import('./db/central-changes.ts')
        this.centralChanges = subscribeCentralChanges({
          url: this.config.sync.url,
          // one slot per node, named from its PeerId (slot names: a-z 0-9 _)
          slot: `bkg_${createHash('sha256').update(this.peerId).digest('hex').slice(0, 40)}`,
          skipSyncedBy: this.peerId,
          log: this.log.child({ service: 'central-changes' }),
          onEvent: async (event) => {
            const { syncedBy: _by, syncedAt: _at, ...signed } = event
            await this.events.acceptRemote([signed], async (peer) => await sync.certificateOf(peer))
          }
        })
      }
    }, (err: unknown) => this.log.error({ err }, 'the event database did not open: no central sync'))
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

/**
 * Builds a node on a data dir it holds alone: the lock comes first, before any database or key
 * store opens, and goes with a failed build.
 */
export async function createNode (init: NodeInit): Promise<BkgNode> {
  const lock = await DataDirLock.acquire(dataDirPaths(init.dataDir))
  try {
    const node = await assembleNode(init)
    node.lock = lock
    return node
  } catch (err) {
    await lock.release()
    throw err
  }
}

/**
 * One line an operator can act on for a listen failure. libp2p's own error lists every address
 * with a stack and advice about its fault tolerance setting; Fastify's is a bare EADDRINUSE.
 */
function describeListenFailure (err: unknown, flag: '--listen' | '--api', apiAddress?: string): unknown {
  if (!(err instanceof Error)) return err
  const failures: Array<{ addr: string, reason: string }> = []
  if (err.name === 'UnsupportedListenAddressesError') {
    for (const match of err.message.matchAll(/^\s+(\/\S+): (?:\w*Error: )?(.+)$/gm)) failures.push({ addr: match[1], reason: match[2] })
  } else if (flag === '--api' && typeof (err as NodeJS.ErrnoException).code === 'string') {
    failures.push({ addr: apiAddress ?? '?', reason: `${(err as NodeJS.ErrnoException).code}: ${err.message}` })
  }
  if (failures.length === 0) return err
  const what = flag === '--listen' ? 'listen address' : 'API address'
  const busy = failures.filter((failure) => /EADDRINUSE/.test(failure.reason))
  if (busy.length > 0) {
    return new AddressInUseError(`${what} ${busy.map((failure) => failure.addr).join(', ')} is in use by another process: stop it, or choose another port with ${flag}`)
  }
  const first = failures[0]
  return new ListenError(`cannot listen on ${what} ${first.addr}: ${first.reason.replace(/^listen \w+: /, '')}; check ${flag}`)
}

async function assembleNode (init: NodeInit): Promise<BkgNode> {
  const { config, log } = init
  const paths = dataDirPaths(init.dataDir)
  // refused before anything opens: an API that would go out unencrypted is a setting to fix
  const apiTransport = decideApiTransport(config.api, config.apiTls)
  const privateKey = await loadLibp2pKey(paths)
  const trust = await Trust.load({ caPath: paths.ca, certPath: paths.cert, crlPath: paths.crl })
  const selfId = peerIdFromPrivateKey(privateKey).toString()
  if (trust.own.peerId !== selfId) {
    throw new NodeIdentityError(`node.crt is for peer ${trust.own.peerId}, but this data dir's key is ${selfId}: sign this node's own node.csr`)
  }
  const apiTls = apiTransport.tls ? await loadApiTlsOptions(paths, trust, apiTransport) : null
  if (!apiTransport.tls && !apiTransport.loopback) {
    log.warn({ api: config.api }, 'the API is served over plain HTTP beyond loopback (--api-insecure): tokens cross the network in the clear unless something else encrypts it')
  }

  const peers = new AdmittedPeers()
  // eslint-disable-next-line prefer-const -- read by the metrics closures made before the host exists
  let host: Host | undefined
  const metrics = new NodeMetrics({
    connectedPeers: () => host?.getPeers().length ?? 0,
    admittedPeers: () => peers.size,
    dhtRoutingTableSize: () => host == null ? 0 : routingTableSize(host)
  })
  // eslint-disable-next-line prefer-const -- read by the admission callback made before the service exists
  let revocation: RevocationService | undefined
  const relayServer = config.relay.server === 'auto' ? trust.own.roles.includes('relay') : config.relay.server
  host = await createHost({
    privateKey,
    config,
    relayServer,
    admission: {
      trust,
      peers,
      log: log.child({ service: 'admission' }),
      onOutcome: (result, code) => metrics.admissions.inc({ result, code }),
      onCrlAdopted: (crl) => { void revocation?.enforce(crl) }
    }
  })
  host.addEventListener('peer:disconnect', (event) => peers.remove(event.detail))
  guardNamespaceTopics(host.services.pubsub, peers)
  host.services.pubsub.addEventListener('message', (event) => metrics.gossipMessages.inc({ direction: 'in', topic: topicFamily(event.detail.topic) }))

  revocation = revocationService({ recheckIntervalMs: config.admission.recheckIntervalMs })({ pubsub: host.services.pubsub, trust, peers, hangUp: async (peer) => { await host.hangUp(peer) }, log: log.child({ service: 'revocation' }) })
  const pubsub = pubsubService()({ pubsub: host.services.pubsub, peers })
  const models = new ModelService(paths.models, {
    host,
    trust,
    log: log.child({ service: 'models' }),
    peers,
    penalize: (peer, reason) => {
      peers.deny(peer, { code: 'bad_blocks', message: reason }, config.admission.rejectCooldownMs * 10)
      void host.hangUp(peer).catch(() => {})
    }
  })

  const replication = new ReplicationService(paths.models, { host, peers, trust, models, privateKey, log: log.child({ service: 'replication' }) })

  const db = new Database({ dir: paths.database, templateDir: defaultTemplateDir(), log: log.child({ service: 'db' }) })
  const events = new EventService({ host, trust, peers, privateKey, db, log: log.child({ service: 'events' }) })
  const rooms = roomHub()({ pubsub: host.services.pubsub, peers, namespaces: new Set(trust.own.namespaces), log: log.child({ service: 'rooms' }) })

  const bootstrapAddrs: Multiaddr[] = [
    ...config.bootstrap.map((addr) => multiaddr(addr)),
    ...(config.bootstrapFile != null ? await readBootstrapList(config.bootstrapFile, true) : []),
    ...await readBootstrapList(paths.bootstrapList, false)
  ]
  const bootstrapper = new Bootstrapper({ addrs: bootstrapAddrs, peerCachePath: paths.peerCache }, { host, log: log.child({ service: 'bootstrap' }) })

  const [adminToken, tokenSecret] = await Promise.all([loadOrCreateSecret(paths.apiToken), loadOrCreateSecret(paths.tokenSecret)])
  // pg is loaded only for a node that syncs
  const centralSync = config.sync.url != null ? new (await import('./db/central-sync.ts')).CentralSync({ url: config.sync.url, nodeId: selfId, certificatePem: trust.own.pem, db, log: log.child({ service: 'central-sync' }) }) : null
  const psql = config.psql ? new PsqlAccess({ db, socketDir: join(paths.dir, 'psql'), log: log.child({ service: 'psql' }) }) : null
  const storage = await StorageService.create({ dir: paths.storage, config: config.storage, db, secret: tokenSecret, log: log.child({ service: 'storage' }) })
  const node: BkgNode = new BkgNode({
    paths,
    config,
    log,
    trust,
    peers,
    metrics,
    host,
    revocation,
    pubsub,
    models,
    replication,
    db,
    events,
    rooms,
    storage,
    centralSync,
    psql,
    bootstrapper
  })
  // the node tells its own status: the API is built once the node exists
  node.api = await createApiServer({
    log: log.child({ service: 'api' }),
    keys: { adminToken, secret: tokenSecret },
    rateLimitPerMinute: config.http.rateLimit,
    tls: apiTls == null ? null : { server: apiTls, adminCheck: apiTransport.adminMtls ? (request) => requireAdminClientCertificate(request, trust) : null },
    services: {
      status: node,
      metrics,
      peers: peerDirectory()({ host, peers }),
      pubsub,
      revocation,
      models,
      replication,
      events,
      rooms,
      storage
    }
  })
  return node
}
