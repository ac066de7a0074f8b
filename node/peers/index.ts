/**
 * The peers this node is connected to, and the operator's actions on peers (dial, DHT lookup,
 * hang up), as a service the API uses instead of reaching into libp2p.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { peerDirectory } from './peers/index.ts'
 *
 * const peers = peerDirectory({ dialTimeoutMs: 15_000 })({ host, peers: admittedPeers })
 * await peers.list(true)                      // [{ peerId, name, roles, connection, latencyMs, … }]
 * await peers.dial({ peerId: '12D3KooW…' })   // via 'connected' | 'address' | 'peer-store' | 'dht'
 */
export { peerDirectory, PeerDirectory, type ConnectedPeer, type DialResult, type LookupResult, type PeerDirectoryComponents, type PeerDirectoryInit } from './peer-directory.ts'
