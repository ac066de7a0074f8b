import type { ConnectionGater, PeerId } from '@libp2p/interface'
import type { AdmittedPeers } from './admitted-peers.ts'

/**
 * Keeps refused and revoked peers out before any handshake work is spent on them, in both
 * directions: no dial to them, and an inbound connection from them is dropped right after Noise.
 */
export function admissionGater (peers: AdmittedPeers): ConnectionGater {
  const denied = (peerId: PeerId): boolean => peers.denial(peerId) != null
  return {
    denyDialPeer: denied,
    denyInboundEncryptedConnection: denied,
    denyOutboundEncryptedConnection: denied,
    denyInboundRelayReservation: (source) => !peers.isAdmitted(source),
    denyOutboundRelayedConnection: (source, destination) => !peers.isAdmitted(source) || !peers.isAdmitted(destination),
  }
}
