/**
 * Revocation: spreads CA-signed CRLs through the mesh on the CRL gossip topic, drops every
 * admitted peer a newer CRL revokes, and drops peers whose certificate expired while connected.
 * Which CRL is newest and valid is the admission folder's Trust; this service moves CRLs around.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { revocationService } from './revocation/index.ts'
 *
 * const revocation = revocationService({ recheckIntervalMs: 60_000 })({
 *   pubsub: host.services.pubsub, trust, peers, hangUp: async (peer) => { await host.hangUp(peer) }, log
 * })
 * revocation.start()                                          // validates and follows CRL gossip
 * const { number, dropped } = await revocation.publish(pem)   // an admin node adopts and spreads a CRL
 * revocation.stop()
 */
export {
  CrlRejectedError, revocationService, RevocationService,
  type RevocationComponents, type RevocationInit
} from './revocation-service.ts'
