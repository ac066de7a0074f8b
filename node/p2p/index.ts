/**
 * The libp2p host (TCP and circuit relay transports, Noise wrapped by certificate admission,
 * Yamux, the private Kademlia DHT, gossipsub, identify, ping, AutoNAT, DCUtR), the bootstrapper
 * that dials bootstrap peers and keeps a peer cache, and the reachability report.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { Bootstrapper, createHost, reachabilityOf, type Host } from './p2p/index.ts'
 *
 * const host: Host = await createHost({ privateKey, config, relayServer: false, admission: { trust, peers, log } })
 * await host.start()
 * const bootstrapper = new Bootstrapper({ addrs, peerCachePath }, { host, log })
 * await bootstrapper.start()
 * reachabilityOf(host).reachability   // 'public' | 'relayed' | 'private' | 'unknown'
 */
export { Bootstrapper, type BootstrapperDeps, type BootstrapperInit } from './bootstrapper.ts'
export { createHost, routingTableSize, type Host, type HostInit, type HostServices } from './host.ts'
export { reachabilityOf, type Reachability, type ReachabilityReport } from './reachability.ts'
