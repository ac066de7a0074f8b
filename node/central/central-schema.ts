import type { ClientBase } from 'pg'
import type { Migration } from '../db/index.ts'

/**
 * The schema of the optional central PostgreSQL that nodes sync their events to (`--sync`).
 * Every node applies these migrations when its sync connects; they are recorded in the central
 * `bkg.migrations`, and an advisory lock serialises nodes that start at the same moment.
 *
 * Row-level security is the embedded database's (node/db/migrations.ts): the tenant roles
 * bkg_reader, bkg_writer and bkg_admin see, insert and delete only the rows of the namespace in
 * `bkg.namespace`, and nobody updates an event.
 *
 * Who the sync is: the URL's login role. With FORCE ROW LEVEL SECURITY even the tables' owner
 * is subject to the policies, so the sync needs a policy of its own: role bkg_sync (NOLOGIN) has
 * one that sees every namespace, with SELECT and INSERT on bkg.events and the cursors. The sync
 * runs each transaction under `SET LOCAL ROLE bkg_sync` when its login is a member, so it works
 * the same whether that membership inherits or not, and never with more than bkg_sync's rights.
 * A superuser is a member of every role, so tests take that path too. In production, give the
 * sync a login that owns the schema (it ran these migrations, which grant it bkg_sync when it may
 * grant roles) or have an administrator run `GRANT bkg_sync TO <login>` for each node's login.
 * Creating the roles needs CREATEROLE once; where they already exist it is not needed.
 *
 * The publication bkg_events (inserts only) is what node/db/central-changes.ts streams back.
 */

export const SYNC_ROLE = 'bkg_sync'
export const CENTRAL_PUBLICATION = 'bkg_events'

// a sub-select: evaluated once per statement, not once per row
const TENANT = "(SELECT current_setting('bkg.namespace', true))"

// roles are cluster-wide, and the advisory lock only serialises one database: another database on
// the same server may create a role at the same moment, which fails with unique_violation
const createRole = (name: string) => `
  BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${name}') THEN CREATE ROLE ${name} NOLOGIN; END IF;
  EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
  END;`

export const CENTRAL_MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'roles, events, sync cursors, publication',
    sql: `
      DO $$ BEGIN
        ${createRole('bkg_reader')}
        ${createRole('bkg_writer')}
        ${createRole('bkg_admin')}
        ${createRole(SYNC_ROLE)}
        IF NOT pg_has_role(current_user, '${SYNC_ROLE}', 'MEMBER') THEN
          BEGIN
            EXECUTE format('GRANT ${SYNC_ROLE} TO %I', current_user);
          EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'bkg: % is not a member of ${SYNC_ROLE}; an administrator must GRANT ${SYNC_ROLE} TO it', current_user;
          END;
        END IF;
      END $$;
      GRANT USAGE ON SCHEMA bkg TO bkg_reader, bkg_writer, bkg_admin, ${SYNC_ROLE};

      CREATE TABLE bkg.events (
        origin    text   NOT NULL,
        seq       bigint NOT NULL CHECK (seq > 0),
        id        text   NOT NULL UNIQUE,
        namespace text   NOT NULL,
        type      text   NOT NULL,
        payload   jsonb  NOT NULL,
        hlc       text   NOT NULL,
        prev_seq  bigint NOT NULL CHECK (prev_seq >= 0 AND prev_seq < seq),
        sig       text   NOT NULL,
        synced_at timestamptz NOT NULL DEFAULT now(),
        -- the PeerId of the node whose sync delivered the row; NULL when it was inserted by SQL
        synced_by text,
        PRIMARY KEY (origin, seq)
      );
      CREATE INDEX events_namespace_hlc ON bkg.events (namespace, hlc);
      CREATE INDEX events_origin_namespace_seq ON bkg.events (origin, namespace, seq);
      ALTER TABLE bkg.events ENABLE ROW LEVEL SECURITY;
      ALTER TABLE bkg.events FORCE ROW LEVEL SECURITY;
      GRANT SELECT ON bkg.events TO bkg_reader, bkg_writer, bkg_admin, ${SYNC_ROLE};
      GRANT INSERT ON bkg.events TO bkg_writer, bkg_admin, ${SYNC_ROLE};
      GRANT DELETE ON bkg.events TO bkg_admin;
      CREATE POLICY events_tenant_select ON bkg.events FOR SELECT TO bkg_reader, bkg_writer, bkg_admin USING (namespace = ${TENANT});
      CREATE POLICY events_tenant_insert ON bkg.events FOR INSERT TO bkg_writer, bkg_admin WITH CHECK (namespace = ${TENANT});
      CREATE POLICY events_tenant_delete ON bkg.events FOR DELETE TO bkg_admin USING (namespace = ${TENANT});
      CREATE POLICY events_sync ON bkg.events FOR ALL TO ${SYNC_ROLE} USING (true) WITH CHECK (true);

      -- per node: the local_id up to which its events are here, and the event at that local_id,
      -- which tells whether the cursor belongs to the node's current database or to one it lost
      CREATE TABLE bkg.sync_cursors (
        node        text   PRIMARY KEY,
        local_id    bigint NOT NULL,
        last_origin text,
        last_seq    bigint,
        updated_at  timestamptz NOT NULL DEFAULT now()
      );
      GRANT SELECT, INSERT, UPDATE ON bkg.sync_cursors TO ${SYNC_ROLE};

      CREATE PUBLICATION ${CENTRAL_PUBLICATION} FOR TABLE bkg.events WITH (publish = 'insert');
    `
  },
  {
    version: 2,
    name: 'node certificates',
    // each syncing node leaves its certificate here, so a node taking in central changes can check
    // events of origins it never met; a reader trusts a row only if it chains to the operator CA
    // and names that PeerId, so a node writing another's row gains nothing
    sql: `
      CREATE TABLE bkg.node_certificates (
        peer_id    text PRIMARY KEY,
        pem        text NOT NULL CHECK (length(pem) < 16384),
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      ALTER TABLE bkg.node_certificates ENABLE ROW LEVEL SECURITY;
      ALTER TABLE bkg.node_certificates FORCE ROW LEVEL SECURITY;
      GRANT SELECT, INSERT, UPDATE ON bkg.node_certificates TO ${SYNC_ROLE};
      GRANT SELECT ON bkg.node_certificates TO bkg_reader, bkg_writer, bkg_admin;
      CREATE POLICY node_certificates_sync ON bkg.node_certificates FOR ALL TO ${SYNC_ROLE} USING (true) WITH CHECK (true);
      CREATE POLICY node_certificates_read ON bkg.node_certificates FOR SELECT TO bkg_reader, bkg_writer, bkg_admin USING (true);
    `
  }
]

// the key every node locks while it migrates; hashtextextended is stable across versions and platforms
const MIGRATION_LOCK = "hashtextextended('bkg central schema', 0)"

/** Applies the missing migrations; resolves with how many it applied. */
export async function migrateCentral (client: ClientBase): Promise<number> {
  // the common case, every migration applied, takes no lock and needs no CREATE right on the database
  if (await pendingVersions(client) === 0) return 0
  await client.query('BEGIN')
  try {
    await client.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`)
    await client.query('CREATE SCHEMA IF NOT EXISTS bkg; CREATE TABLE IF NOT EXISTS bkg.migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())')
    const applied = new Set((await client.query<{ version: number }>('SELECT version FROM bkg.migrations')).rows.map((row) => row.version))
    let count = 0
    for (const migration of CENTRAL_MIGRATIONS) {
      if (applied.has(migration.version)) continue
      await client.query(migration.sql)
      await client.query('INSERT INTO bkg.migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name])
      count++
    }
    await client.query('COMMIT')
    return count
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {}) // the failure is rethrown; a connection that cannot roll back is broken and not reused
    throw err
  }
}

async function pendingVersions (client: ClientBase): Promise<number> {
  const exists = (await client.query<{ t: string | null }>("SELECT to_regclass('bkg.migrations')::text AS t")).rows[0].t != null
  if (!exists) return CENTRAL_MIGRATIONS.length
  const applied = new Set((await client.query<{ version: number }>('SELECT version FROM bkg.migrations')).rows.map((row) => row.version))
  return CENTRAL_MIGRATIONS.filter((migration) => !applied.has(migration.version)).length
}
