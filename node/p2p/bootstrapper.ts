import { readFile } from 'node:fs/promises'
import { KEEP_ALIVE, type Connection, type PeerId, type PeerStore } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { PeerCache } from '../../protocols/peer-cache.ts'
import { writeFileAtomic } from '../../lib/fs.ts'
import {
  BOOTSTRAP_DIAL_TIMEOUT_MS, BOOTSTRAP_RETRY_MAX_MS, BOOTSTRAP_RETRY_MIN_MS, BOOTSTRAP_TAG, BOOTSTRAP_TAG_VALUE,
  PEER_CACHE_ADDRS_PER_PEER, PEER_CACHE_MAX_PEERS
} from './constants.ts'
import type { Host } from './host.ts'

export interface BootstrapperInit {
  /** the bootstrap list: dialled at start, tagged keep-alive, and dialled again while the node has no connection */
  addrs: Multiaddr[]
  /** file of peers seen last time, dialled too so a restarted node rejoins without its list */
  peerCachePath: string
  /** the first wait before a retry round (doubles after each round that finds no connection) */
  retryMinMs?: number
  /** the longest wait between retry rounds */
  retryMaxMs?: number
  /** a dial that has not connected by then counts as failed */
  dialTimeoutMs?: number
  /** how many connected peers the cache keeps */
  cacheMaxPeers?: number
  /** how many addresses of each peer the cache keeps (and dials) */
  cacheAddrsPerPeer?: number
}

/** What the bootstrapper uses of the host: its PeerId, its connections, dialling, the peer store's merge and get. */
export type BootstrapperHost = Pick<Host, 'peerId'> & {
  getConnections: () => Array<Pick<Connection, 'remotePeer'>>
  dial: (addr: Multiaddr, options: { signal: AbortSignal }) => Promise<Pick<Connection, 'remotePeer'>>
  peerStore: {
    merge: (peerId: PeerId, data: Pick<Parameters<PeerStore['merge']>[1], 'multiaddrs' | 'tags'>) => Promise<unknown>
    get: (peerId: PeerId) => Promise<{ addresses: Array<{ multiaddr: Multiaddr }> }>
  }
}

export interface BootstrapperComponents {
  host: BootstrapperHost
  log: Pick<Logger, 'info' | 'warn' | 'debug'>
}

/**
 * Joins the mesh: dials the bootstrap list and the cached peers at start, keeps bootstrap peers
 * tagged keep-alive (libp2p redials them when they drop), and retries with backoff while the node
 * has no connection at all. At stop it writes the connected peers to the peer cache.
 */
export class Bootstrapper {
  private readonly components: BootstrapperComponents
  private readonly addrs: Multiaddr[]
  private readonly peerCachePath: string
  private readonly retryMinMs: number
  private readonly retryMaxMs: number
  private readonly dialTimeoutMs: number
  private readonly cacheMaxPeers: number
  private readonly cacheAddrsPerPeer: number
  private timer?: NodeJS.Timeout
  private delay: number
  private stopped = false

  constructor (components: BootstrapperComponents, init: BootstrapperInit) {
    this.components = components
    this.addrs = init.addrs
    this.peerCachePath = init.peerCachePath
    this.retryMinMs = init.retryMinMs ?? BOOTSTRAP_RETRY_MIN_MS
    this.retryMaxMs = init.retryMaxMs ?? BOOTSTRAP_RETRY_MAX_MS
    this.dialTimeoutMs = init.dialTimeoutMs ?? BOOTSTRAP_DIAL_TIMEOUT_MS
    this.cacheMaxPeers = init.cacheMaxPeers ?? PEER_CACHE_MAX_PEERS
    this.cacheAddrsPerPeer = init.cacheAddrsPerPeer ?? PEER_CACHE_ADDRS_PER_PEER
    this.delay = this.retryMinMs
  }

  async start (): Promise<void> {
    this.stopped = false
    const cached = await this.readCache()
    await this.dialAll([...this.addrs, ...cached], true)
    this.schedule()
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.writeCache()
  }

  private schedule (): void {
    if (this.stopped) return
    this.timer = setTimeout(() => { void this.tick() }, this.delay)
    this.timer.unref()
  }

  private async tick (): Promise<void> {
    if (this.components.host.getConnections().length === 0 && this.addrs.length > 0) {
      await this.dialAll(this.addrs, false)
      this.delay = Math.min(this.delay * 2, this.retryMaxMs)
    } else {
      this.delay = this.retryMinMs
    }
    this.schedule()
  }

  private async dialAll (addrs: Multiaddr[], first: boolean): Promise<void> {
    const { host, log } = this.components
    const self = host.peerId.toString()
    await Promise.all(addrs.map(async (addr) => {
      const peer = addr.getComponents().findLast((c) => c.name === 'p2p')?.value
      if (peer === self) return
      try {
        if (peer != null && this.addrs.includes(addr)) {
          await host.peerStore.merge(peerIdFromString(peer), {
            multiaddrs: [addr],
            tags: { [BOOTSTRAP_TAG]: { value: BOOTSTRAP_TAG_VALUE }, [KEEP_ALIVE]: { value: 1 } }
          })
        }
        const connection = await host.dial(addr, { signal: AbortSignal.timeout(this.dialTimeoutMs) })
        log.info({ peer: connection.remotePeer.toString(), addr: addr.toString() }, 'connected to bootstrap peer')
      } catch (err) {
        if (first) log.warn({ addr: addr.toString(), err: (err as Error).message }, 'bootstrap dial failed; will retry')
      }
    }))
  }

  private async readCache (): Promise<Multiaddr[]> {
    try {
      const cache = PeerCache.parse(JSON.parse(await readFile(this.peerCachePath, 'utf8')))
      return cache.peers.flatMap((peer) => peer.addrs.slice(0, this.cacheAddrsPerPeer).map((addr) => multiaddr(addr)))
    } catch (err) {
      // none yet (a first start) or a damaged one: the configured list still applies, and the cache is written anew
      this.components.log.debug({ err }, 'no usable peer cache')
      return []
    }
  }

  private async writeCache (): Promise<void> {
    const { host } = this.components
    const connected = [...new Set(host.getConnections().map((connection) => connection.remotePeer.toString()))]
    const peers = await Promise.all(connected.slice(0, this.cacheMaxPeers).map(async (id) => {
      // a peer without a record has no addresses to cache
      const record = await host.peerStore.get(peerIdFromString(id)).catch(() => null)
      const addrs = (record?.addresses ?? [])
        .map(({ multiaddr: addr }) => addr.toString())
        .filter((addr) => !addr.includes('/p2p-circuit'))
        .slice(0, this.cacheAddrsPerPeer)
        .map((addr) => addr.includes('/p2p/') ? addr : `${addr}/p2p/${id}`)
      return { peerId: id, addrs }
    }))
    const cache: PeerCache = { version: 1, peers: peers.filter((peer) => peer.addrs.length > 0) }
    await writeFileAtomic(this.peerCachePath, JSON.stringify(cache, null, 2))
  }
}

/**
 * The bootstrapper as a service factory: `bootstrapper({ addrs, peerCachePath })({ host, log })`.
 * Its `start` dials (the node runs it in `afterStart` so dials never hold up the start).
 */
export function bootstrapper (init: BootstrapperInit): (components: BootstrapperComponents) => Bootstrapper {
  return (components) => new Bootstrapper(components, init)
}
