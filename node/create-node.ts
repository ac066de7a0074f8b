import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { readBootstrapList } from '../bootstrap/list.ts'
import type { Named } from '../lib/startable.ts'
import { AdmittedPeers, Trust } from './admission/index.ts'
import { createApiServer, type ApiServices } from './api/server.ts'
import { decideApiTransport, loadApiTlsOptions, requireAdminClientCertificate } from './api/tls.ts'
import { defaultCacheDir, type NodeConfig } from './config/index.ts'
import { database, PsqlAccess } from './db/index.ts'
import { eventService, roomHub, type EventService } from './events/index.ts'
import { dataDirPaths, DataDirLock, loadLibp2pKey, loadOrCreateSecret } from './identity/index.ts'
import { NodeIdentityError } from './listen-errors.ts'
import { NodeMetrics, topicFamily } from './metrics/index.ts'
import { llmService, peerMesh } from './llm/index.ts'
import { modelService, type ModelService } from './models/index.ts'
import { BkgNode } from './bkg-node.ts'
import { apiPart, hostPart } from './node-parts.ts'
import { bootstrapper as bootstrapperService, connectedPeers, createHost, protocolStreams, routingTableSize, type Host } from './p2p/index.ts'
import { peerDirectory } from './peers/index.ts'
import { guardNamespaceTopics, pubsubService } from './pubsub/index.ts'
import { replicationService } from './replication/index.ts'
import { revocationService, type RevocationService } from './revocation/index.ts'
import { sandboxRuntime, sandboxService } from './sandbox/index.ts'
import { storageService, type StorageService } from './storage/index.ts'

export { BkgNode, type NodeInfo, type NodeParts } from './bkg-node.ts'
export { AddressInUseError, ListenError, NodeIdentityError } from './listen-errors.ts'

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
  // the Pyodide start snapshot and capped builds are machine-wide, as the database template is
  const runtime = sandboxRuntime({ poolSize: config.sandbox.pool, maxWorkers: config.sandbox.maxWorkers, warmBeforeUse: config.sandbox.warmAtStart, cacheDir: join(init.cacheDir ?? defaultCacheDir(), 'pyodide') })({ log: child('sandbox-runtime') })
  const sandboxes = sandboxService({ dir: paths.sandboxes, warmAtStart: config.sandbox.warmAtStart })({ runtime, log: child('sandboxes') })
  const llm = llmService(config.llm)({
    peerId: selfId,
    models,
    registry: metrics.registry,
    log: child('llm'),
    // peers' requests run on the service's local backend; this node's go to the best peer when needed
    mesh: peerMesh({ announcements: { intervalMs: config.llm.announceIntervalMs } }, {
      peerId: host.peerId,
      streams: host,
      pubsub: host.services.pubsub,
      peers,
      ping: async (peer, options) => await host.services.ping.ping(peer, options),
      log: child('llm-mesh')
    })
  })
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
    sandboxes,
    llm
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
    ['llm', llm],
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
