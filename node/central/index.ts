/**
 * Central sync: the node's signed events copied to a central Postgres (one cursor per node, RLS
 * there as here), and with `--sync-changes` central inserts streamed back in by logical
 * replication. Loaded only by a node started with `--sync`: it brings the `pg` driver.
 *
 * @example
 * import { centralSyncService } from './central/index.ts'
 *
 * const central = centralSyncService({ url, changes: true, nodeId, certificatePem })({ db, events, log })
 * await central.start(); await central.afterStart?.()   // the node's startAll does this
 * central.status()                                      // { sync: { state, cursor, … }, changes }
 */
export { centralSyncService, type CentralEvents, type CentralSyncService, type CentralSyncServiceInit } from './central-sync-service.ts'
export { CentralSync, type CentralSyncOptions, type CentralSyncStatus } from './central-sync.ts'
export { subscribeCentralChanges, type CentralChanges, type CentralChangesStatus, type CentralEvent } from './central-changes.ts'
export { CENTRAL_MIGRATIONS, migrateCentral } from './central-schema.ts'
