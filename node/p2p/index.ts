/**
 * The libp2p host (TCP and circuit relay transports, Noise wrapped by certificate admission,
 * Yamux, the private Kademlia DHT, gossipsub, identify, ping, AutoNAT, DCUtR), the bootstrapper
 * that dials bootstrap peers and keeps a peer cache, and the reachability report.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { bootstrapper, createHost, reachabilityOf, type Host } from './p2p/index.ts'
 *
 * const host: Host = await createHost({ privateKey, config, relayServer: false, admission: { trust, peers, log } })
 * await host.start()
 * const joiner = bootstrapper({ addrs, peerCachePath, retryMaxMs: 30_000 })({ host, log })
 * await joiner.start()   // dials the list and the cached peers; retries while there is no connection
 * await joiner.stop()    // writes the connected peers to the peer cache
 * reachabilityOf(host).reachability   // 'public' | 'relayed' | 'private' | 'unknown'
 */
export { bootstrapper, Bootstrapper, type BootstrapperComponents, type BootstrapperHost, type BootstrapperInit } from './bootstrapper.ts'
export { createHost, routingTableSize, type Host, type HostInit, type HostServices } from './host.ts'
export { connectedPeers, protocolStreams, type ConnectedPeers, type HostComponents, type ProtocolStreams } from './host-components.ts'
export { reachabilityOf, type Reachability, type ReachabilityReport } from './reachability.ts'
