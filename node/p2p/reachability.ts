import { isLoopback, isPrivate } from '@libp2p/utils'
import { addressesWithMetadata, type Host } from './host.ts'

export type Reachability = 'public' | 'relayed' | 'private' | 'unknown'

export interface ReachabilityReport {
  reachability: Reachability
  addresses: Array<{ addr: string, verified: boolean, type: string }>
}

/**
 * What AutoNAT and the relay client have established: a verified public address wins, then a
 * circuit relay reservation, then addresses that only a LAN (or this machine) can dial.
 */
export function reachabilityOf (host: Host): ReachabilityReport {
  const addresses = addressesWithMetadata(host).map((entry) => ({
    addr: entry.multiaddr.toString(),
    verified: entry.verified,
    type: entry.type as string,
    multiaddr: entry.multiaddr
  }))
  const publicVerified = addresses.some((entry) => entry.verified && !entry.addr.includes('/p2p-circuit') &&
    !isPrivate(entry.multiaddr) && !isLoopback(entry.multiaddr))
  const relayed = host.getMultiaddrs().some((addr) => addr.toString().includes('/p2p-circuit'))
  const local = addresses.some((entry) => isPrivate(entry.multiaddr) || isLoopback(entry.multiaddr))
  const reachability: Reachability = publicVerified ? 'public' : relayed ? 'relayed' : local ? 'private' : 'unknown'
  return { reachability, addresses: addresses.map(({ addr, verified, type }) => ({ addr, verified, type })) }
}
