import type { SignedEvent, SyncHead } from '../../protocols/events.ts'
import type { Database, Tenant, Transaction } from '../db/index.ts'

/** An event as this node stores it: `localId` orders events by arrival here (stream cursors). */
export interface StoredEvent extends SignedEvent {
  localId: number
  receivedAt: string
}

export interface EventQuery {
  namespace: string
  /** only events that arrived after this local id */
  afterLocalId?: number
  type?: string
  limit: number
}

interface EventRow {
  origin: string
  seq: string | number
  id: string
  namespace: string
  type: string
  payload: unknown
  hlc: string
  prev_seq: string | number
  sig: string
  local_id: string | number
  received_at: Date | string
}

const COLUMNS = 'origin, seq, id, namespace, type, payload, hlc, prev_seq, sig, local_id, received_at'

const key = (origin: string, namespace: string): string => `${origin}\u0000${namespace}`

/**
 * Events in the embedded database, and each (origin, namespace) chain's head: the highest seq up
 * to which every event of that chain is here. Inserts are idempotent (a duplicate is a no-op);
 * an event past a gap is stored and waits in `pending` until catch-up fills the gap.
 */
export class EventStore {
  private readonly db: Database
  private readonly heads = new Map<string, number>()
  /** per chain: prevSeq → seq of events stored beyond the chain's head */
  private readonly pending = new Map<string, Map<number, number>>()
  private loaded: Promise<void> | undefined

  constructor (db: Database) {
    this.db = db
  }

  /** Opens the database and reads the chain heads (once). */
  async load (): Promise<void> {
    this.loaded ??= this.db.asNode(async (tx) => {
      this.heads.clear()
      this.pending.clear()
      for (const row of (await tx.query<{ origin: string, namespace: string, seq: string }>('SELECT origin, namespace, seq FROM bkg.event_heads')).rows) {
        this.heads.set(key(row.origin, row.namespace), Number(row.seq))
      }
      const beyond = await tx.query<{ origin: string, namespace: string, seq: string, prev_seq: string }>(
        'SELECT e.origin, e.namespace, e.seq, e.prev_seq FROM bkg.events e LEFT JOIN bkg.event_heads h ON h.origin = e.origin AND h.namespace = e.namespace WHERE e.seq > coalesce(h.seq, 0)')
      for (const row of beyond.rows) this.addPending(key(row.origin, row.namespace), Number(row.prev_seq), Number(row.seq))
    }).catch((err: unknown) => {
      this.loaded = undefined
      throw err
    })
    await this.loaded
  }

  /** The highest seq up to which this node holds the chain; 0 when it holds none. */
  head (origin: string, namespace: string): number {
    return this.heads.get(key(origin, namespace)) ?? 0
  }

  /** The highest seq any chain of `origin` has reached here (an origin's own counter after a restart). */
  highestSeq (origin: string): number {
    let highest = 0
    for (const [chain, seq] of this.heads) if (chain.startsWith(origin + '\u0000')) highest = Math.max(highest, seq)
    return highest
  }

  headsIn (namespaces: ReadonlySet<string>): SyncHead[] {
    const out: SyncHead[] = []
    for (const [chain, seq] of this.heads) {
      const [origin, namespace] = chain.split('\u0000')
      if (namespaces.has(namespace)) out.push({ origin, namespace, seq })
    }
    return out
  }

  /** Stores events as the node (gossip, catch-up); returns the ones that were new. */
  async ingest (events: SignedEvent[]): Promise<StoredEvent[]> {
    await this.load()
    return await this.db.asNode(async (tx) => await this.insert(tx, events))
  }

  /** Stores the node's own new events as a tenant, so the RLS policies check the namespace. */
  async insertAs (tenant: Tenant | null, events: SignedEvent[]): Promise<StoredEvent[]> {
    await this.load()
    if (tenant == null) return await this.db.asNode(async (tx) => await this.insert(tx, events))
    return await this.db.asTenant(tenant, async (tx) => await this.insert(tx, events))
  }

  /** Events of one chain after `afterSeq`, in seq order (catch-up answers). */
  async range (origin: string, namespace: string, afterSeq: number, limit: number): Promise<SignedEvent[]> {
    const rows = await this.db.asNode(async (tx) => (await tx.query<EventRow>(
      `SELECT ${COLUMNS} FROM bkg.events WHERE origin = $1 AND namespace = $2 AND seq > $3 ORDER BY seq LIMIT $4`,
      [origin, namespace, afterSeq, limit])).rows)
    return rows.map((row) => toSigned(row))
  }

  /** Events a tenant (or the node, when `tenant` is null) may see, in arrival order. */
  async list (tenant: Tenant | null, query: EventQuery): Promise<StoredEvent[]> {
    await this.load()
    const run = async (tx: Transaction): Promise<StoredEvent[]> => {
      const params: unknown[] = [query.namespace, query.afterLocalId ?? 0, query.limit]
      let sql = `SELECT ${COLUMNS} FROM bkg.events WHERE namespace = $1 AND local_id > $2`
      if (query.type != null) {
        params.push(query.type)
        sql += ` AND type = $${params.length}`
      }
      sql += ' ORDER BY local_id LIMIT $3'
      return (await tx.query<EventRow>(sql, params)).rows.map(toStored)
    }
    return tenant == null ? await this.db.asNode(run) : await this.db.asTenant(tenant, run)
  }

  /** The local id of an event the caller may see, or null. */
  async localIdOf (tenant: Tenant | null, id: string): Promise<number | null> {
    await this.load()
    const run = async (tx: Transaction): Promise<number | null> => {
      const row = (await tx.query<{ local_id: string }>('SELECT local_id FROM bkg.events WHERE id = $1', [id])).rows[0]
      return row == null ? null : Number(row.local_id)
    }
    return tenant == null ? await this.db.asNode(run) : await this.db.asTenant(tenant, run)
  }

  private async insert (tx: Transaction, events: SignedEvent[]): Promise<StoredEvent[]> {
    if (events.length === 0) return []
    const rows = events.map((event) => ({
      origin: event.origin,
      seq: event.seq,
      id: event.id,
      namespace: event.namespace,
      type: event.type,
      payload: event.payload,
      hlc: event.hlc,
      prev_seq: event.prevSeq,
      sig: event.sig
    }))
    // json_to_recordset reads a JSON null payload as SQL NULL: it is stored as JSON null (coalesce).
    // Only what the database adds comes back, as one JSON text (per-row results cost a third of
    // the insert's time in PGlite): the rest is the caller's own events
    const byKey = new Map(events.map((event) => [`${event.origin}\u0000${event.seq}`, event]))
    const result = (await tx.query<{ rows: string, at: Date | string }>(
      `WITH ins AS (
         INSERT INTO bkg.events (origin, seq, id, namespace, type, payload, hlc, prev_seq, sig)
         SELECT origin, seq, id, namespace, type, coalesce(payload, 'null'::jsonb), hlc, prev_seq, sig
         FROM json_to_recordset($1::json) AS x(origin text, seq bigint, id text, namespace text, type text, payload jsonb, hlc text, prev_seq bigint, sig text)
         ON CONFLICT DO NOTHING
         RETURNING origin, seq, local_id)
       SELECT coalesce(json_agg(json_build_array(origin, seq, local_id)), '[]')::text AS rows, now() AS at FROM ins`,
      [JSON.stringify(rows)])).rows[0]
    const receivedAt = new Date(result.at).toISOString()
    const inserted = (JSON.parse(result.rows) as Array<[string, number, number]>).map(([origin, seq, localId]): StoredEvent => ({
      ...byKey.get(`${origin}\u0000${seq}`)!,
      localId,
      receivedAt
    }))
    if (inserted.length === 0) return inserted
    // chain heads are the node's bookkeeping, not the tenant's: written as the node, same transaction
    await tx.exec('SET LOCAL ROLE bkg_node')
    const moved = this.advance(inserted)
    if (moved.length > 0) {
      await tx.query(
        `INSERT INTO bkg.event_heads (origin, namespace, seq)
         SELECT origin, namespace, seq FROM jsonb_to_recordset($1::jsonb) AS x(origin text, namespace text, seq bigint)
         ON CONFLICT (origin, namespace) DO UPDATE SET seq = EXCLUDED.seq`,
        [JSON.stringify(moved)])
    }
    return inserted.sort((a, b) => a.localId - b.localId)
  }

  /** Moves chain heads over the newly stored events (and any pending ones they connect). */
  private advance (inserted: StoredEvent[]): SyncHead[] {
    const touched = new Set<string>()
    for (const event of inserted) {
      const chain = key(event.origin, event.namespace)
      this.addPending(chain, event.prevSeq, event.seq)
      touched.add(chain)
    }
    const moved: SyncHead[] = []
    for (const chain of touched) {
      const waiting = this.pending.get(chain)!
      const before = this.heads.get(chain) ?? 0
      let head = before
      for (let next = waiting.get(head); next != null; next = waiting.get(head)) {
        waiting.delete(head)
        head = next
      }
      if (waiting.size === 0) this.pending.delete(chain)
      if (head !== before) {
        this.heads.set(chain, head)
        const [origin, namespace] = chain.split('\u0000')
        moved.push({ origin, namespace, seq: head })
      }
    }
    return moved
  }

  private addPending (chain: string, prevSeq: number, seq: number): void {
    let waiting = this.pending.get(chain)
    if (waiting == null) {
      waiting = new Map()
      this.pending.set(chain, waiting)
    }
    if (!waiting.has(prevSeq)) waiting.set(prevSeq, seq)
  }
}

function toSigned (row: EventRow): SignedEvent {
  return {
    v: 1,
    id: row.id,
    namespace: row.namespace,
    type: row.type,
    payload: row.payload as SignedEvent['payload'],
    origin: row.origin,
    seq: Number(row.seq),
    prevSeq: Number(row.prev_seq),
    hlc: row.hlc,
    sig: row.sig
  }
}

function toStored (row: EventRow): StoredEvent {
  return { ...toSigned(row), localId: Number(row.local_id), receivedAt: new Date(row.received_at).toISOString() }
}
