/**
 * Revocation: spreads CA-signed CRLs through the mesh on the CRL gossip topic, drops every
 * admitted peer a newer CRL revokes, and drops peers whose certificate expired while connected.
 * Which CRL is newest and valid is the admission folder's Trust; this service moves CRLs around.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { RevocationService } from './revocation/index.ts'
 *
 * const revocation = new RevocationService({ recheckIntervalMs: 60_000 }, { host, trust, peers, log })
 * revocation.start()                                          // validates and follows CRL gossip
 * const { number, dropped } = await revocation.publish(pem)   // an admin node adopts and spreads a CRL
 * revocation.stop()
 */
export { CrlRejectedError, RevocationService, type RevocationDeps, type RevocationInit } from './revocation-service.ts'
