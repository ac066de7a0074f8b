/**
 * Who may connect: the node's trust (operator CA certificate, its own certificate, the newest
 * CRL), the set of admitted peers with their certificates and refusals, and the two hooks that
 * put admission inside libp2p's connection upgrade (an encrypter that runs the certificate
 * exchange after Noise, and a connection gater that refuses denied peers early).
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { AdmittedPeers, admissionGater, admittingEncrypter, Trust } from './admission/index.ts'
 *
 * const trust = await Trust.load({ caPath, certPath, crlPath })
 * const peers = new AdmittedPeers()
 * const host = await createLibp2p({
 *   connectionEncrypters: [admittingEncrypter(noise(), { trust, peers, log }, { timeoutMs, rejectCooldownMs })],
 *   connectionGater: admissionGater(peers)
 * })
 * peers.isAdmitted(peerId)          // true once the peer's certificate was checked
 * peers.get(peerId)?.roles          // what its certificate says
 */
export { AdmittedPeers, type AdmittedPeersEvents, type DenialReason } from './admitted-peers.ts'
export { admittingEncrypter, type AdmissionDeps, type AdmissionOptions } from './admitting-encrypter.ts'
export { admissionGater } from './connection-gater.ts'
export { AdmissionRefusedError } from './errors.ts'
export { Trust, type CrlOffer, type TrustInit } from './trust.ts'
