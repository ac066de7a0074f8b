import { readFile } from 'node:fs/promises'
import { KEEP_ALIVE } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { PeerCache } from '../../protocols/peer-cache.ts'
import { writeFileAtomic } from '../../lib/fs.ts'
import type { Host } from './host.ts'

export interface BootstrapperInit {
  addrs: Multiaddr[]
  /** file of peers seen last time, dialled too so a restarted node rejoins without its list */
  peerCachePath: string
  retryMinMs?: number
  retryMaxMs?: number
}

export interface BootstrapperDeps {
  host: Host
  log: Logger
}

const BOOTSTRAP_TAG = 'bkg-bootstrap'

/**
 * Joins the mesh: dials the bootstrap list and the cached peers at start, keeps bootstrap peers
 * tagged keep-alive (libp2p redials them when they drop), and retries with backoff while the node
 * has no connection at all.
 */
export class Bootstrapper {
  private readonly init: BootstrapperInit
  private readonly deps: BootstrapperDeps
  private timer?: NodeJS.Timeout
  private delay: number
  private stopped = false

  constructor (init: BootstrapperInit, deps: BootstrapperDeps) {
    this.init = init
    this.deps = deps
    this.delay = init.retryMinMs ?? 1000
  }

  async start (): Promise<void> {
    this.stopped = false
    const cached = await this.readCache()
    await this.dialAll([...this.init.addrs, ...cached], true)
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
    if (this.deps.host.getConnections().length === 0 && this.init.addrs.length > 0) {
      await this.dialAll(this.init.addrs, false)
      this.delay = Math.min(this.delay * 2, this.init.retryMaxMs ?? 30_000)
    } else {
      this.delay = this.init.retryMinMs ?? 1000
    }
    this.schedule()
  }

  private async dialAll (addrs: Multiaddr[], first: boolean): Promise<void> {
    const { host, log } = this.deps
    const self = host.peerId.toString()
    await Promise.all(addrs.map(async (addr) => {
      const peer = addr.getComponents().findLast((c) => c.name === 'p2p')?.value
      if (peer === self) return
      try {
        if (peer != null && this.init.addrs.includes(addr)) {
          await host.peerStore.merge(peerIdFromString(peer), {
            multiaddrs: [addr],
            tags: { [BOOTSTRAP_TAG]: { value: 50 }, [KEEP_ALIVE]: { value: 1 } }
          })
        }
        const connection = await host.dial(addr, { signal: AbortSignal.timeout(10_000) })
        log.info({ peer: connection.remotePeer.toString(), addr: addr.toString() }, 'connected to bootstrap peer')
      } catch (err) {
        if (first) log.warn({ addr: addr.toString(), err: (err as Error).message }, 'bootstrap dial failed; will retry')
      }
    }))
  }

  private async readCache (): Promise<Multiaddr[]> {
    try {
      const cache = PeerCache.parse(JSON.parse(await readFile(this.init.peerCachePath, 'utf8')))
      return cache.peers.flatMap((peer) => peer.addrs.slice(0, 4).map((addr) => multiaddr(addr)))
    } catch (err) {
      // none yet (a first start) or a damaged one: the configured list still applies, and the cache is written anew
      this.deps.log.debug({ err }, 'no usable peer cache')
      return []
    }
  }

  private async writeCache (): Promise<void> {
    const { host } = this.deps
    const connected = [...new Set(host.getConnections().map((connection) => connection.remotePeer.toString()))]
    const peers = await Promise.all(connected.slice(0, 64).map(async (id) => {
      // a peer without a record has no addresses to cache
      const record = await host.peerStore.get(peerIdFromString(id)).catch(() => null)
      const addrs = (record?.addresses ?? [])
        .map(({ multiaddr: addr }) => addr.toString())
        .filter((addr) => !addr.includes('/p2p-circuit'))
        .slice(0, 4)
        .map((addr) => addr.includes('/p2p/') ? addr : `${addr}/p2p/${id}`)
      return { peerId: id, addrs }
    }))
    const cache: PeerCache = { version: 1, peers: peers.filter((peer) => peer.addrs.length > 0) }
    await writeFileAtomic(this.init.peerCachePath, JSON.stringify(cache, null, 2))
  }
}
