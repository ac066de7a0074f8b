/**
 * The node's embedded Postgres (PGlite): opened on first use, migrated, every query in a
 * transaction either as the node itself or as a tenant whose role and namespace the RLS policies
 * enforce; and `bkg start --psql`, the Postgres wire protocol on a Unix socket for operators.
 *
 * @example
 * import { database } from '../db/index.ts'
 *
 * const db = database({ dir: paths.database, templateDir: defaultCacheDir() })({ log })
 * const rows = await db.asTenant({ role: 'reader', namespace: 'lab' }, async (tx) => (await tx.query('SELECT * FROM bkg.events')).rows)
 * await db.stop()
 */
export { database, Database, type DatabaseComponents, type DatabaseInit, type Tenant, type Transaction } from './database.ts'
export { MIGRATIONS, type Migration } from './migrations.ts'
export { PsqlAccess, type PsqlAccessInit, type PsqlEndpoint } from './psql-access.ts'
