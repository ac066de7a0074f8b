import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { database, type Database } from '../../node/db/index.ts'
import { defaultCacheDir } from '../../node/config/index.ts'
import { tempDir } from '../helpers/mesh.ts'

const row = (namespace: string, seq: number) => ({ origin: 'o', seq, id: `id-${namespace}-${seq}`, namespace, type: 't', payload: {}, hlc: '000000000000001-00000', prev_seq: seq - 1, sig: 's' })
const INSERT = `INSERT INTO bkg.events (origin, seq, id, namespace, type, payload, hlc, prev_seq, sig)
  SELECT origin, seq, id, namespace, type, payload, hlc, prev_seq, sig FROM jsonb_to_recordset($1::jsonb)
  AS x(origin text, seq bigint, id text, namespace text, type text, payload jsonb, hlc text, prev_seq bigint, sig text)`

describe('row-level security on the embedded database', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: Database

  beforeAll(async () => {
    tmp = await tempDir()
    db = database({ dir: `${tmp.dir}/db`, templateDir: defaultCacheDir() })({ log: pino({ level: 'silent' }) })
    await db.asNode(async (tx) => { await tx.query(INSERT, [JSON.stringify([row('a', 1), row('b', 2)])]) })
  }, 60_000)

  afterAll(async () => {
    await db?.stop()
    await tmp?.remove()
  })

  it('every tenant table forces RLS, so even its owner is subject to the policies', async () => {
    const tables = await db.asNode(async (tx) => (await tx.query<{ relname: string, relrowsecurity: boolean, relforcerowsecurity: boolean }>(
      "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relnamespace = 'bkg'::regnamespace AND relkind = 'r' AND relname <> 'migrations'")).rows)
    expect(tables.length).toBeGreaterThan(0)
    for (const table of tables) expect(table, table.relname).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true })
  })

  it('a tenant of namespace a reads only a', async () => {
    for (const role of ['reader', 'writer', 'admin'] as const) {
      const ids = await db.asTenant({ role, namespace: 'a' }, async (tx) => (await tx.query<{ id: string }>('SELECT id FROM bkg.events')).rows.map((r) => r.id))
      expect(ids, role).toEqual(['id-a-1'])
    }
  })

  it('a tenant of a cannot insert into b, and a reader cannot insert at all', async () => {
    await expect(db.asTenant({ role: 'writer', namespace: 'a' }, async (tx) => await tx.query(INSERT, [JSON.stringify([row('b', 3)])])))
      .rejects.toThrow(/row-level security/)
    await expect(db.asTenant({ role: 'reader', namespace: 'a' }, async (tx) => await tx.query(INSERT, [JSON.stringify([row('a', 4)])])))
      .rejects.toThrow(/permission denied/)
  })

  it('a tenant of a cannot update or delete rows of b', async () => {
    await expect(db.asTenant({ role: 'admin', namespace: 'a' }, async (tx) => await tx.query("UPDATE bkg.events SET type = 'x' WHERE namespace = 'b'")))
      .rejects.toThrow(/permission denied/)
    const deleted = await db.asTenant({ role: 'admin', namespace: 'a' }, async (tx) => (await tx.query("DELETE FROM bkg.events WHERE namespace = 'b'")).affectedRows)
    expect(deleted).toBe(0)
    const still = await db.asNode(async (tx) => (await tx.query<{ n: number }>("SELECT count(*)::int AS n FROM bkg.events WHERE namespace = 'b'")).rows[0].n)
    expect(still).toBe(1)
  })

  it('the role and namespace end with the transaction: nothing leaks into the next one', async () => {
    await db.asTenant({ role: 'reader', namespace: 'a' }, async () => {})
    const after = await db.asNode(async (tx) => (await tx.query<{ role: string, ns: string | null }>("SELECT current_user AS role, current_setting('bkg.namespace', true) AS ns")).rows[0])
    expect(after.role).toBe('bkg_node')
    expect(after.ns ?? '').toBe('')
  })

  it('a tenant cannot read the node\'s chain bookkeeping', async () => {
    await expect(db.asTenant({ role: 'admin', namespace: 'a' }, async (tx) => await tx.query('SELECT * FROM bkg.event_heads')))
      .rejects.toThrow(/permission denied/)
  })
})
