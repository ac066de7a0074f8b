import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { mkdir, readFile, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { PGlite, Transaction } from '@electric-sql/pglite'
import type { Logger } from 'pino'
import type { TokenRole } from '../auth/index.ts'
import { writeFileAtomic } from '../../lib/fs.ts'
import { MIGRATIONS } from './migrations.ts'

export type { Transaction }

/** Who a transaction runs as: a tenant role limited to one namespace by the RLS policies. */
export interface Tenant {
  role: TokenRole
  namespace: string
}

const TENANT_ROLES: Record<TokenRole, string> = { reader: 'bkg_reader', writer: 'bkg_writer', admin: 'bkg_admin' }

// the package's exports hide its package.json: read it beside the resolved entry point (dist/)
const PGLITE_VERSION = (JSON.parse(readFileSync(join(dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite')), '..', 'package.json'), 'utf8')) as { version: string }).version

export interface DatabaseInit {
  /** the PGlite data dir */
  dir: string
  /**
   * where a freshly initialised, empty data dir is cached as a tarball (config's defaultCacheDir).
   * Creating a database runs initdb inside WebAssembly (4-19 s on these machines); restoring the
   * tarball takes about a second, so every later node on the machine (a devnet, a test run)
   * starts its database from it.
   */
  templateDir: string
}

export interface DatabaseComponents {
  log: Logger
}

/** `database({ dir, templateDir })({ log })`: the node's embedded Postgres, opened on first use. */
export function database (init: DatabaseInit): (components: DatabaseComponents) => Database {
  return (components) => new Database(init, components)
}

/**
 * The node's embedded Postgres (PGlite). It opens on first use, not at start: one instance costs
 * hundreds of MB, and a node that never stores events or objects should not carry it.
 */
export class Database {
  private readonly init: DatabaseInit
  private readonly log: Logger
  private db: PGlite | undefined
  private opening: Promise<PGlite> | undefined

  constructor (init: DatabaseInit, components: DatabaseComponents) {
    this.init = init
    this.log = components.log
  }

  /** Nothing opens here: the first query (or a service that needs the database) opens it. */
  start (): void {}

  get isOpen (): boolean {
    return this.db != null
  }

  /** Whether a database was created here before (then it is worth opening at start). */
  async exists (): Promise<boolean> {
    return await stat(join(this.init.dir, 'PG_VERSION')).then(() => true, () => false)
  }

  async open (): Promise<PGlite> {
    if (this.db != null) return this.db
    this.opening ??= this.openDatabase().then((db) => {
      this.db = db
      return db
    }, (err: unknown) => {
      this.opening = undefined
      throw err
    })
    return await this.opening
  }

  async stop (): Promise<void> {
    // a failed open was thrown to whoever opened; there is nothing to close then
    const db = await this.opening?.catch(() => undefined)
    this.db = undefined
    this.opening = undefined
    await db?.close()
  }

  /** Runs `fn` in one transaction as the node itself (every namespace). */
  async asNode<T> (fn: (tx: Transaction) => Promise<T>): Promise<T> {
    const db = await this.open()
    return await db.transaction(async (tx) => {
      await tx.exec('SET LOCAL ROLE bkg_node')
      return await fn(tx)
    })
  }

  /** Runs `fn` in one transaction as a tenant: its role, its namespace, nothing else visible. */
  async asTenant<T> (tenant: Tenant, fn: (tx: Transaction) => Promise<T>): Promise<T> {
    const db = await this.open()
    return await db.transaction(async (tx) => {
      await tx.query("SELECT set_config('bkg.namespace', $1, true)", [tenant.namespace])
      await tx.exec(`SET LOCAL ROLE ${TENANT_ROLES[tenant.role]}`)
      return await fn(tx)
    })
  }

  private async openDatabase (): Promise<PGlite> {
    const started = performance.now()
    await mkdir(this.init.dir, { recursive: true, mode: 0o700 })
    const fresh = !await this.exists()
    const templatePath = join(this.init.templateDir, `pglite-${PGLITE_VERSION}.tar.gz`)
    // no cached template yet: this node creates the database and caches it below
    const template = fresh ? await readFile(templatePath).catch(() => null) : null
    // loaded on first use: a node that never opens its database does not carry PGlite's modules
    const { PGlite } = await import('@electric-sql/pglite')
    const db = new PGlite(this.init.dir, template != null ? { loadDataDir: new Blob([template]) } : {})
    await db.waitReady
    if (fresh && template == null) await this.saveTemplate(db, templatePath)
    await this.migrate(db)
    this.log.info({ ms: Math.round(performance.now() - started), fresh, fromTemplate: template != null }, 'database open')
    return db
  }

  private async saveTemplate (db: PGlite, path: string): Promise<void> {
    try {
      const dump = await db.dumpDataDir('gzip')
      await mkdir(this.init.templateDir, { recursive: true })
      await writeFileAtomic(path, new Uint8Array(await dump.arrayBuffer()))
    } catch (err) {
      this.log.warn({ err }, 'could not cache the empty database as a template; the next node will create its own')
    }
  }

  private async migrate (db: PGlite): Promise<void> {
    await db.exec('CREATE SCHEMA IF NOT EXISTS bkg; CREATE TABLE IF NOT EXISTS bkg.migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())')
    const applied = new Set((await db.query<{ version: number }>('SELECT version FROM bkg.migrations')).rows.map((row) => row.version))
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue
      await db.transaction(async (tx) => {
        await tx.exec(migration.sql)
        await tx.query('INSERT INTO bkg.migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name])
      })
    }
  }
}
