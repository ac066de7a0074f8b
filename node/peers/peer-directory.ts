import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { BkgError } from '../../lib/bkg-error.ts'
import type { AdmittedPeers } from '../admission/index.ts'
import type { Host } from '../p2p/index.ts'
import { DIAL_TIMEOUT_MS, LOOKUP_TIMEOUT_MS, PING_TIMEOUT_MS } from './constants.ts'

export interface PeerDirectoryInit {
  dialTimeoutMs?: number
  lookupTimeoutMs?: number
  pingTimeoutMs?: number
}

/** What the directory uses of the host: connections, the peer store, peer routing, the DHT, ping. */
export type PeerDirectoryHost = Pick<Host, 'peerId' | 'getConnections' | 'dial' | 'hangUp' | 'peerStore' | 'peerRouting'> & {
  services: { dht: Pick<Host['services']['dht'], 'findPeer'>, ping: Pick<Host['services']['ping'], 'ping'> }
}

export interface PeerDirectoryComponents {
  host: PeerDirectoryHost
  peers: Pick<AdmittedPeers, 'get' | 'denial'>
}

export interface ConnectedPeer {
  peerId: string
  name: string
  roles: string[]
  namespaces: string[]
  addrs: string[]
  connection: { direction: 'inbound' | 'outbound', transport: 'direct' | 'relayed', remoteAddr: string, openedAt: string }
  latencyMs: number | null
}

export interface DialResult {
  peerId: string
  name: string | null
  via: 'connected' | 'address' | 'peer-store' | 'dht'
  /** of the connection the dial produced; a relayed one may later be upgraded to direct (DCUtR) */
  transport: 'direct' | 'relayed'
  remoteAddr: string
  addrs: string[]
  elapsedMs: number
}

export interface LookupResult { peerId: string, addrs: string[], answeredBy: string, elapsedMs: number }

/**
 * The admitted peers this node is connected to, and what an operator does with peers: dial one
 * (by address, or by PeerId through the peer store or the DHT), ask the DHT where one is, hang
 * up on one. Refusals are BkgErrors (invalid_peer_id, peer_not_found, peer_refused, …).
 */
export class PeerDirectory {
  private readonly components: PeerDirectoryComponents
  private readonly dialTimeoutMs: number
  private readonly lookupTimeoutMs: number
  private readonly pingTimeoutMs: number

  constructor (components: PeerDirectoryComponents, init: PeerDirectoryInit = {}) {
    this.components = components
    this.dialTimeoutMs = init.dialTimeoutMs ?? DIAL_TIMEOUT_MS
    this.lookupTimeoutMs = init.lookupTimeoutMs ?? LOOKUP_TIMEOUT_MS
    this.pingTimeoutMs = init.pingTimeoutMs ?? PING_TIMEOUT_MS
  }

  /** Admitted peers with an open connection (a direct one preferred), optionally pinged. */
  async list (withPing: boolean): Promise<ConnectedPeer[]> {
    const { host, peers } = this.components
    const byPeer = new Map<string, Connection>()
    for (const connection of host.getConnections()) {
      const id = connection.remotePeer.toString()
      const known = byPeer.get(id)
      if (known == null || (isRelayed(known) && !isRelayed(connection))) byPeer.set(id, connection)
    }
    return await Promise.all([...byPeer].flatMap(([id, connection]) => {
      const cert = peers.get(id)
      if (cert == null) return []
      return [(async (): Promise<ConnectedPeer> => ({
        peerId: id,
        name: cert.name,
        roles: cert.roles,
        namespaces: cert.namespaces,
        addrs: await this.addrsOf(id),
        connection: {
          direction: connection.direction,
          transport: isRelayed(connection) ? 'relayed' : 'direct',
          remoteAddr: connection.remoteAddr.toString(),
          openedAt: new Date(connection.timeline.open).toISOString()
        },
        latencyMs: withPing ? await this.pingMs(connection) : null
      }))()]
    }))
  }

  /** Connects by multiaddr, or by PeerId (already connected, from the peer store, or found in the DHT). */
  async dial (target: { peerId?: string, addr?: string }): Promise<DialResult> {
    const { host, peers } = this.components
    const started = performance.now()
    let address: Multiaddr | undefined
    let peer = target.peerId
    if (target.addr != null) {
      try {
        address = multiaddr(target.addr)
      } catch {
        throw new BkgError('invalid_multiaddr', 400, `"${target.addr}" is not a multiaddr`)
      }
      const embedded = address.getComponents().findLast((c) => c.name === 'p2p')?.value
      if (peer != null && embedded != null && embedded !== peer) throw new BkgError('invalid_request', 400, 'addr names a different peer than peerId')
      peer ??= embedded
    }
    let peerId: PeerId | undefined
    if (peer != null) {
      peerId = parsePeerId(peer)
      if (peerId.equals(host.peerId)) throw new BkgError('invalid_request', 400, 'that is this node\'s own PeerId')
    }
    if (address == null && peerId == null) throw new BkgError('invalid_request', 400, 'give peerId, addr, or both')

    let via: DialResult['via'] = 'address'
    if (address == null && peerId != null) via = await this.locate(peerId)

    let connection: Connection
    try {
      connection = await host.dial(address ?? peerId!, { signal: AbortSignal.timeout(this.dialTimeoutMs) })
    } catch (err) {
      const refusal = peers.denial(peer ?? '')
      if (refusal != null) throw new BkgError('peer_refused', 403, `${peer} was refused admission: ${refusal.code}: ${refusal.message}`)
      throw new BkgError('dial_failed', 502, `could not connect: ${(err as Error).message}`)
    }
    const id = connection.remotePeer.toString()
    return {
      peerId: id,
      name: peers.get(id)?.name ?? null,
      via,
      transport: isRelayed(connection) ? 'relayed' : 'direct',
      remoteAddr: connection.remoteAddr.toString(),
      addrs: await this.addrsOf(id),
      elapsedMs: Math.round((performance.now() - started) * 100) / 100
    }
  }

  /** Asks the DHT (never the local cache) where a peer is. */
  async lookup (peer: string): Promise<LookupResult> {
    const peerId = parsePeerId(peer)
    const started = performance.now()
    try {
      for await (const event of this.components.host.services.dht.findPeer(peerId, { useCache: false, signal: AbortSignal.timeout(this.lookupTimeoutMs) })) {
        if (event.name === 'FINAL_PEER') {
          return {
            peerId: peerId.toString(),
            addrs: event.peer.multiaddrs.map(String),
            answeredBy: event.from.toString(),
            elapsedMs: Math.round((performance.now() - started) * 100) / 100
          }
        }
      }
    } catch (err) {
      throw new BkgError('peer_not_found', 404, `the DHT does not know ${peerId.toString()}: ${(err as Error).message}`)
    }
    throw new BkgError('peer_not_found', 404, `the DHT does not know ${peerId.toString()}`)
  }

  /** Closes every connection to a peer; resolves with how many there were. */
  async hangUp (peer: string): Promise<number> {
    const peerId = parsePeerId(peer)
    const closed = this.components.host.getConnections(peerId).length
    if (closed === 0) throw new BkgError('not_connected', 404, `no connection to ${peer}`)
    await this.components.host.hangUp(peerId)
    return closed
  }

  /** How a dial by PeerId alone finds its peer. */
  private async locate (peerId: PeerId): Promise<DialResult['via']> {
    const { host } = this.components
    if (host.getConnections(peerId).length > 0) return 'connected'
    // a peer the store never saw is not an error here: the DHT is asked next
    const known = await host.peerStore.get(peerId).catch(() => null)
    if (known != null && known.addresses.length > 0) return 'peer-store'
    try {
      const found = await host.peerRouting.findPeer(peerId, { signal: AbortSignal.timeout(this.lookupTimeoutMs) })
      if (found.multiaddrs.length === 0) throw new Error('no addresses')
    } catch (err) {
      throw new BkgError('peer_not_found', 404, `no address for ${peerId.toString()} in the peer store or the DHT (${(err as Error).message})`)
    }
    return 'dht'
  }

  private async addrsOf (id: string): Promise<string[]> {
    // a peer without a record has no known addresses
    const record = await this.components.host.peerStore.get(peerIdFromString(id)).catch(() => null)
    return (record?.addresses ?? []).map((address) => address.multiaddr.toString())
  }

  private async pingMs (connection: Connection): Promise<number | null> {
    try {
      return await this.components.host.services.ping.ping(connection.remotePeer, { signal: AbortSignal.timeout(this.pingTimeoutMs) })
    } catch {
      // a peer that does not answer within the timeout shows no latency, not an error
      return null
    }
  }
}

export function peerDirectory (init: PeerDirectoryInit = {}): (components: PeerDirectoryComponents) => PeerDirectory {
  return (components) => new PeerDirectory(components, init)
}

function parsePeerId (text: string): PeerId {
  try {
    return peerIdFromString(text)
  } catch {
    throw new BkgError('invalid_peer_id', 400, `"${text.slice(0, 80)}" is not a PeerId`)
  }
}

function isRelayed (connection: Connection): boolean {
  return connection.remoteAddr.toString().includes('/p2p-circuit')
}
