import type { GossipSub } from '@libp2p/gossipsub'
import type { AbortOptions, ContentRouting, Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'

/**
 * What libp2p hands a service in the host's `services` map (the parts of its components BKG's
 * services use): libp2p builds such a service with the host, and starts and stops it with the
 * host (`start` of every component first, then every `afterStart`; in parallel, so a service
 * that subscribes to gossipsub does so in `afterStart`, when gossipsub runs).
 */
export interface HostComponents {
  peerId: PeerId
  registrar: Pick<Registrar, 'handle' | 'unhandle'>
  connectionManager: Pick<ConnectionManager, 'openStream' | 'getConnections'>
  /** libp2p's event bus ('peer:connect', …) */
  events: Pick<Libp2p, 'addEventListener' | 'removeEventListener'>
  contentRouting: ContentRouting
  /** the gossipsub service, made before the services that use it */
  pubsub: GossipSub
}

/** Serving a protocol and opening streams of it to peers: the host's `handle`, `unhandle`, `dialProtocol`. */
export interface ProtocolStreams {
  handle: Registrar['handle']
  unhandle: Registrar['unhandle']
  dialProtocol: (peer: PeerId, protocol: string, options?: AbortOptions) => Promise<Stream>
}

/** The peers this node has a connection to. */
export interface ConnectedPeers {
  getPeers: () => PeerId[]
}

export function protocolStreams ({ registrar, connectionManager }: Pick<HostComponents, 'registrar' | 'connectionManager'>): ProtocolStreams {
  return {
    handle: registrar.handle.bind(registrar),
    unhandle: registrar.unhandle.bind(registrar),
    dialProtocol: async (peer, protocol, options) => await connectionManager.openStream(peer, protocol, options)
  }
}

export function connectedPeers ({ connectionManager }: Pick<HostComponents, 'connectionManager'>): ConnectedPeers {
  return {
    getPeers: () => {
      const peers = new Map<string, PeerId>()
      for (const connection of connectionManager.getConnections()) peers.set(connection.remotePeer.toString(), connection.remotePeer)
      return [...peers.values()]
    }
  }
}
