/**
 * The embedded database's schema, applied in order, each once (recorded in bkg.migrations).
 *
 * Row-level security: every tenant table has ENABLE and FORCE ROW LEVEL SECURITY, and its policies
 * compare `namespace` with the transaction's `bkg.namespace` setting. API requests run as one of
 * the tenant roles (bkg_reader, bkg_writer, bkg_admin) with `SET LOCAL ROLE`, never as the
 * superuser, which would bypass the policies; the node's own work (gossip ingest, catch-up) runs
 * as bkg_node, whose policy sees every namespace. None of these roles can log in.
 */
export interface Migration {
  version: number
  name: string
  sql: string
}

const TENANT = "current_setting('bkg.namespace', true)"
/** the same, inside a quoted SQL string (a policy made with EXECUTE format(…)) */
const TENANT_IN_LITERAL = TENANT.replaceAll("'", "''")

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'roles and events',
    sql: `
      DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bkg_reader') THEN CREATE ROLE bkg_reader NOLOGIN; END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bkg_writer') THEN CREATE ROLE bkg_writer NOLOGIN; END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bkg_admin') THEN CREATE ROLE bkg_admin NOLOGIN; END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bkg_node') THEN CREATE ROLE bkg_node NOLOGIN; END IF;
      END $$;
      GRANT USAGE ON SCHEMA bkg TO bkg_reader, bkg_writer, bkg_admin, bkg_node;

      CREATE TABLE bkg.events (
        origin      text   NOT NULL,
        seq         bigint NOT NULL CHECK (seq > 0),
        id          text   NOT NULL UNIQUE,
        namespace   text   NOT NULL,
        type        text   NOT NULL,
        payload     jsonb  NOT NULL,
        hlc         text   NOT NULL,
        prev_seq    bigint NOT NULL CHECK (prev_seq >= 0 AND prev_seq < seq),
        sig         text   NOT NULL,
        local_id    bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (origin, seq)
      );
      CREATE INDEX events_namespace_local_id ON bkg.events (namespace, local_id);
      CREATE INDEX events_origin_namespace_seq ON bkg.events (origin, namespace, seq);
      ALTER TABLE bkg.events ENABLE ROW LEVEL SECURITY;
      ALTER TABLE bkg.events FORCE ROW LEVEL SECURITY;
      GRANT SELECT ON bkg.events TO bkg_reader, bkg_writer, bkg_admin, bkg_node;
      GRANT INSERT ON bkg.events TO bkg_writer, bkg_admin, bkg_node;
      GRANT DELETE ON bkg.events TO bkg_admin, bkg_node;
      CREATE POLICY events_tenant_select ON bkg.events FOR SELECT TO bkg_reader, bkg_writer, bkg_admin USING (namespace = ${TENANT});
      CREATE POLICY events_tenant_insert ON bkg.events FOR INSERT TO bkg_writer, bkg_admin WITH CHECK (namespace = ${TENANT});
      CREATE POLICY events_tenant_delete ON bkg.events FOR DELETE TO bkg_admin USING (namespace = ${TENANT});
      CREATE POLICY events_node ON bkg.events FOR ALL TO bkg_node USING (true) WITH CHECK (true);

      -- per origin and namespace: the highest seq up to which this node holds the whole chain
      CREATE TABLE bkg.event_heads (
        origin    text   NOT NULL,
        namespace text   NOT NULL,
        seq       bigint NOT NULL,
        PRIMARY KEY (origin, namespace)
      );
      ALTER TABLE bkg.event_heads ENABLE ROW LEVEL SECURITY;
      ALTER TABLE bkg.event_heads FORCE ROW LEVEL SECURITY;
      GRANT SELECT, INSERT, UPDATE ON bkg.event_heads TO bkg_node;
      CREATE POLICY event_heads_node ON bkg.event_heads FOR ALL TO bkg_node USING (true) WITH CHECK (true);
    `
  },
  {
    version: 2,
    name: 'object storage',
    sql: `
      CREATE TABLE bkg.buckets (
        namespace  text NOT NULL,
        name       text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, name)
      );
      -- one row per object; its bytes are in the storage backend under locator
      CREATE TABLE bkg.objects (
        namespace    text   NOT NULL,
        bucket       text   NOT NULL,
        -- "C": keys sort by their UTF-8 bytes, as S3 lists them
        key          text   COLLATE "C" NOT NULL,
        size         bigint NOT NULL,
        etag         text   NOT NULL,
        content_type text   NOT NULL,
        metadata     jsonb  NOT NULL DEFAULT '{}',
        checksums    jsonb  NOT NULL DEFAULT '{}',
        backend      text   NOT NULL,
        locator      jsonb  NOT NULL,
        updated_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, bucket, key),
        FOREIGN KEY (namespace, bucket) REFERENCES bkg.buckets (namespace, name)
      );
      CREATE TABLE bkg.uploads (
        id           text PRIMARY KEY,
        namespace    text NOT NULL,
        bucket       text NOT NULL,
        key          text NOT NULL,
        content_type text NOT NULL,
        metadata     jsonb NOT NULL DEFAULT '{}',
        created_at   timestamptz NOT NULL DEFAULT now(),
        FOREIGN KEY (namespace, bucket) REFERENCES bkg.buckets (namespace, name)
      );
      CREATE TABLE bkg.upload_parts (
        upload_id   text   NOT NULL REFERENCES bkg.uploads (id) ON DELETE CASCADE,
        namespace   text   NOT NULL,
        part_number int    NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
        size        bigint NOT NULL,
        etag        text   NOT NULL,
        md5         text   NOT NULL,
        backend     text   NOT NULL,
        locator     jsonb  NOT NULL,
        PRIMARY KEY (upload_id, part_number)
      );
      GRANT SELECT ON bkg.buckets, bkg.objects, bkg.uploads, bkg.upload_parts TO bkg_reader, bkg_writer, bkg_admin, bkg_node;
      GRANT INSERT, UPDATE, DELETE ON bkg.objects, bkg.uploads, bkg.upload_parts TO bkg_writer, bkg_admin, bkg_node;
      GRANT INSERT, DELETE ON bkg.buckets TO bkg_admin, bkg_node;
      DO $$
      DECLARE t text;
      BEGIN
        FOREACH t IN ARRAY ARRAY['buckets', 'objects', 'uploads', 'upload_parts'] LOOP
          EXECUTE format('ALTER TABLE bkg.%I ENABLE ROW LEVEL SECURITY', t);
          EXECUTE format('ALTER TABLE bkg.%I FORCE ROW LEVEL SECURITY', t);
          EXECUTE format('CREATE POLICY %I ON bkg.%I FOR ALL TO bkg_reader, bkg_writer, bkg_admin USING (namespace = ${TENANT_IN_LITERAL}) WITH CHECK (namespace = ${TENANT_IN_LITERAL})', t || '_tenant', t);
          EXECUTE format('CREATE POLICY %I ON bkg.%I FOR ALL TO bkg_node USING (true) WITH CHECK (true)', t || '_node', t);
        END LOOP;
      END $$;
    `
  },
  {
    version: 3,
    name: 'leaner event indexes, tenant setting read once per statement',
    // measured (bench/events.ts): each unique index cost a few thousand rows/s of ingest, and the
    // tenant policy called current_setting() for every row. The id is
    // a hash of the signed bytes, which include (origin, seq): the primary key already makes it
    // unique, so a plain index serves lookups by id; local_id comes from an identity sequence;
    // catch-up ranges (origin, namespace, seq > n) use the primary key and filter the namespace.
    sql: `
      ALTER TABLE bkg.events DROP CONSTRAINT events_id_key, DROP CONSTRAINT events_local_id_key;
      DROP INDEX bkg.events_origin_namespace_seq;
      CREATE INDEX events_id ON bkg.events (id);
      -- (SELECT current_setting(…)) is evaluated once per statement, not once per row
      ALTER POLICY events_tenant_select ON bkg.events USING (namespace = (SELECT ${TENANT}));
      ALTER POLICY events_tenant_insert ON bkg.events WITH CHECK (namespace = (SELECT ${TENANT}));
      ALTER POLICY events_tenant_delete ON bkg.events USING (namespace = (SELECT ${TENANT}));
      DO $$
      DECLARE t text;
      BEGIN
        FOREACH t IN ARRAY ARRAY['buckets', 'objects', 'uploads', 'upload_parts'] LOOP
          EXECUTE format('ALTER POLICY %I ON bkg.%I USING (namespace = (SELECT ${TENANT_IN_LITERAL})) WITH CHECK (namespace = (SELECT ${TENANT_IN_LITERAL}))', t || '_tenant', t);
        END LOOP;
      END $$;
    `
  }
]
