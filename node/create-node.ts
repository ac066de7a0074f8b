import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { readBootstrapList } from '../bootstrap/list.ts'
import { writeFileAtomic } from '../lib/fs.ts'
import { startAll, stopAll, type Named, type Startable } from '../lib/startable.ts'
import { AdmittedPeers, Trust } from './admission/index.ts'
import { createApiServer, type ApiServer, type ApiServices } from './api/server.ts'
import { decideApiTransport, loadApiTlsOptions, requireAdminClientCertificate } from './api/tls.ts'
import type { CentralSyncService } from './central/index.ts'
import { defaultCacheDir, type NodeConfig } from './config/index.ts'
import { database, PsqlAccess, type Database } from './db/index.ts'
import { eventService, roomHub, type EventService } from './events/index.ts'
import { DataDirLock } from './identity/index.ts'
import { dataDirPaths, loadLibp2pKey, loadOrCreateSecret, type DataDirPaths } from './identity/index.ts'
import { describeListenFailure, NodeIdentityError } from './listen-errors.ts'
import { NodeMetrics, topicFamily } from './metrics/index.ts'
import { modelService, type ModelService } from './models/index.ts'
import { bootstrapper as bootstrapperService, connectedPeers, createHost, protocolStreams, reachabilityOf, routingTableSize, type Host, type ReachabilityReport } from './p2p/index.ts'
import { peerDirectory } from './peers/index.ts'
import { guardNamespaceTopics, pubsubService } from './pubsub/index.ts'
import { replicationService } from './replication/index.ts'
import { revocationService, type RevocationService } from './revocation/index.ts'
import { sandboxRuntime, sandboxService } from './sandbox/index.ts'
import { storageService, type StorageService } from './storage/index.ts'
import { VERSION } from './version.ts'

export { AddressInUseError, ListenError, NodeIdentityError } from './listen-errors.ts'

type CentralStatus = ReturnType<CentralSyncService['status']>

export interface NodeInit {
  dataDir: string
  config: NodeConfig
  log: Logger
  /** the machine-wide cache (the empty-database template); default: defaultCacheDir() */
  cacheDir?: string
  /**
   * Services added to this node after the built-in ones (they start after storage and before the
   * API, and stop before them): `['name', service(init)]`, the factory given the node's components.
   */
  extraServices?: ReadonlyArray<readonly [name: string, create: (components: NodeComponents) => unknown]>
}

/** What a service added through `extraServices` may use. */
export interface NodeComponents {
  host: Host
  peers: AdmittedPeers
  trust: Trust
  events: EventService
  models: ModelService
  storage: StorageService
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

/**
 * Builds a node on a data dir it holds alone: the lock comes first, before any database or key
 * store opens, and goes with a failed build.
 */
export async function createNode (init: NodeInit): Promise<BkgNode> {
  const lock = await DataDirLock.acquire(dataDirPaths(init.dataDir))
  try {
    return await assembleNode(init, lock)
  } catch (err) {
    await lock.release()
    throw err
  }
}

/** The composition root: every service built with what it uses, then the lifecycle table. */
async function assembleNode (init: NodeInit, lock: DataDirLock): Promise<BkgNode> {
  const { config, log } = init
  const paths = dataDirPaths(init.dataDir)
  const child = (service: string): Logger => log.child({ service })
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
  // admission, metrics and revocation refer to each other: the host is built with callbacks that
  // find the services made after it
  const late: { host?: Host, revocation?: RevocationService } = {}
  const metrics = new NodeMetrics({
    connectedPeers: () => late.host?.getPeers().length ?? 0,
    admittedPeers: () => peers.size,
    dhtRoutingTableSize: () => late.host == null ? 0 : routingTableSize(late.host)
  })
  const db = database({ dir: paths.database, templateDir: init.cacheDir ?? defaultCacheDir() })({ log: child('db') })
  const host = late.host = await createHost({
    privateKey,
    config,
    relayServer: config.relay.server === 'auto' ? trust.own.roles.includes('relay') : config.relay.server,
    // the services that serve a libp2p protocol: libp2p builds, starts and stops them with the host
    services: {
      models: (components) => modelService({ dir: paths.models })({
        peerId: components.peerId,
        streams: protocolStreams(components),
        connections: connectedPeers(components),
        events: components.events,
        contentRouting: components.contentRouting,
        pubsub: components.pubsub,
        trust,
        peers,
        log: child('models'),
        penalize: (peer, reason) => {
          peers.deny(peer, { code: 'bad_blocks', message: reason }, config.admission.rejectCooldownMs * 10)
          late.host?.hangUp(peer).catch((err: unknown) => log.debug({ err, peer: peer.toString() }, 'hanging up on a penalized peer failed'))
        }
      }),
      // (not `events`: libp2p keeps its event bus under that name)
      eventLog: (components) => eventService()({
        peerId: components.peerId,
        pubsub: components.pubsub,
        streams: protocolStreams(components),
        trust,
        peers,
        privateKey,
        db,
        log: child('events')
      })
    },
    admission: {
      trust,
      peers,
      log: child('admission'),
      onOutcome: (result, code) => metrics.admissions.inc({ result, code }),
      onCrlAdopted: (crl) => {
        late.revocation?.enforce(crl).catch((err: unknown) => log.error({ err }, 'dropping the peers a CRL revokes failed'))
      }
    }
  })
  host.addEventListener('peer:disconnect', (event) => peers.remove(event.detail))
  guardNamespaceTopics(host.services.pubsub, peers)
  host.services.pubsub.addEventListener('message', (event) => metrics.gossipMessages.inc({ direction: 'in', topic: topicFamily(event.detail.topic) }))

  const revocation = late.revocation = revocationService({ recheckIntervalMs: config.admission.recheckIntervalMs })({ pubsub: host.services.pubsub, trust, peers, hangUp: async (peer) => { await host.hangUp(peer) }, log: child('revocation') })
  const pubsub = pubsubService()({ pubsub: host.services.pubsub, peers })
  const models = host.services.models as ModelService
  const events = host.services.eventLog as EventService
  const replication = replicationService({ dir: paths.models })({ host, peers, trust, models, privateKey, log: child('replication') })
  const rooms = roomHub()({ pubsub: host.services.pubsub, peers, namespaces: new Set(trust.own.namespaces), log: child('rooms') })
  const [adminToken, tokenSecret] = await Promise.all([loadOrCreateSecret(paths.apiToken), loadOrCreateSecret(paths.tokenSecret)])
  const storage = storageService({ dir: paths.storage, ...config.storage })({ db, secret: tokenSecret, log: child('storage') })
  const runtime = sandboxRuntime({ poolSize: config.sandbox.pool, maxWorkers: config.sandbox.maxWorkers })({ log: child('sandbox-runtime') })
  const sandboxes = sandboxService({ dir: paths.sandboxes, warmAtStart: config.sandbox.warmAtStart })({ runtime, log: child('sandboxes') })
  // pg is loaded only for a node that syncs
  const centralSync = config.sync.url != null
    ? (await import('./central/index.ts')).centralSyncService({ url: config.sync.url, changes: config.sync.changes, nodeId: selfId, certificatePem: trust.own.pem })({ db, events, log: child('central-sync') })
    : null
  const psql = config.psql ? new PsqlAccess({ db, socketDir: join(paths.dir, 'psql'), log: child('psql') }) : null
  const bootstrapAddrs: Multiaddr[] = [
    ...config.bootstrap.map((addr) => multiaddr(addr)),
    ...(config.bootstrapFile != null ? await readBootstrapList(config.bootstrapFile, true) : []),
    ...await readBootstrapList(paths.bootstrapList, false)
  ]
  const bootstrapper = bootstrapperService({ addrs: bootstrapAddrs, peerCachePath: paths.peerCache })({ host, log: child('bootstrap') })

  const services: ApiServices = {
    status: { get peerId () { return node.peerId }, info: () => node.info(), databaseStatus: () => node.databaseStatus() },
    metrics,
    peers: peerDirectory()({ host, peers }),
    pubsub,
    revocation,
    models,
    replication,
    events,
    rooms,
    storage,
    sandboxes
  }
  const api = await createApiServer({
    log: child('api'),
    keys: { adminToken, secret: tokenSecret },
    rateLimitPerMinute: config.http.rateLimit,
    tls: apiTls == null ? null : { server: apiTls, adminCheck: apiTransport.adminMtls ? (request) => requireAdminClientCertificate(request, trust) : null },
    services
  })

  // the lifecycle table: parts start in this order and stop in reverse
  const lifecycle: Named<unknown> = [
    // the database stops last: the event service, stopping with the host, still writes what it holds
    ['db', db],
    // with its services: models and events
    ['host', hostPart(host)],
    ['revocation', revocation],
    ['pubsub', pubsub],
    ['rooms', rooms],
    ['storage', storage],
    // the sandbox service starts the runtime (its warm pool) at the first run, or at start with sandbox.warmAtStart
    ['sandbox-runtime', { start () {}, stop: async () => { await runtime.stop() } }],
    ['sandboxes', sandboxes],
    ...(init.extraServices ?? []).map(([name, create]) => [name, create({ host, peers, trust, events, models, storage, log: child(name) })] as const),
    ['central-sync', centralSync],
    ['psql', psql],
    // the replica log (OrbitDB) opens after the node is up and only once needed: admission never waits for it
    ['replication', { start () {}, afterStart: () => { replication.start().catch((err: unknown) => log.error({ err }, 'the replica log did not start')) }, stop: async () => { await replication.stop() } }],
    ['api', apiPart(api, { paths, config, peerId: selfId, onListening: (url) => { node.apiUrl = url } })],
    // joining happens in the background: the API answers (health, reachability) while dials run
    ['bootstrap', { start () {}, afterStart: () => { bootstrapper.start().catch((err: unknown) => log.error({ err }, 'bootstrap failed')) }, stop: async () => { await bootstrapper.stop().catch((err: unknown) => log.warn({ err }, 'could not save the peer cache')) } }]
  ]
  const node: BkgNode = new BkgNode({ paths, config, log, trust, host, db, services, centralSync, psql, lifecycle, lock })
  return node
}

/** The libp2p host, with listen failures told as one line. */
function hostPart (host: Host): Startable {
  return {
    start: async () => {
      try {
        await host.start()
      } catch (err) {
        throw describeListenFailure(err, '--listen')
      }
    },
    stop: async () => { await host.stop() }
  }
}

/** The HTTP API: listens, then writes the data dir's api.json, which only this node removes again. */
function apiPart (api: ApiServer, init: { paths: DataDirPaths, config: NodeConfig, peerId: string, onListening: (url: string) => void }): Startable {
  let url: string | undefined
  return {
    start: async () => {
      try {
        url = await api.listen(init.config.api)
      } catch (err) {
        throw describeListenFailure(err, '--api', init.config.api)
      }
      init.onListening(url)
      // the CLI finds the node by this file (and pins its TLS certificate to the PeerId)
      await writeFileAtomic(init.paths.apiAddress, JSON.stringify({ url, pid: process.pid, peerId: init.peerId }) + '\n')
    },
    stop: async () => {
      if (url != null && await writtenByThisProcess(init.paths.apiAddress)) await rm(init.paths.apiAddress, { force: true })
      await api.close()
    }
  }
}

/** Only the address this node wrote: never a file another process put there. */
async function writtenByThisProcess (path: string): Promise<boolean> {
  try {
    return (JSON.parse(await readFile(path, 'utf8')) as { pid?: number }).pid === process.pid
  } catch {
    // no file, or not ours to read: nothing of this node's to remove
    return false
  }
}
