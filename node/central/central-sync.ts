import pg from 'pg'
import type { Logger } from 'pino'
import { migrateCentral, SYNC_ROLE } from './central-schema.ts'
import type { Database, Transaction } from '../db/index.ts'

export type CentralSyncState = 'connecting' | 'syncing' | 'idle' | 'retrying' | 'stopped'

export interface CentralSyncStatus {
  state: CentralSyncState
  /** the local_id up to which this node's events are in the central database, as last read or written there */
  cursor: number
  /** events here beyond the cursor: 0 once caught up; while a backlog drains, recounted at most once a second (up to 1e6) */
  pending?: number
  /** the last failure, kept after recovery so that an operator can still see what happened */
  lastError: string | null
  /** rows sent since this instance was made (rows the central database already held included) */
  rowsSynced: number
}

export interface CentralSyncOptions {
  /** postgres://user:password@host:port/database of the central server */
  url: string
  /** this node's PeerId: its cursor's key and the rows' synced_by */
  nodeId: string
  /** this node's certificate (PEM), left centrally for nodes that take in central changes */
  certificatePem?: string
  db: Database
  log: Logger
  /** rows per central transaction (default 1000) */
  batchSize?: number
  /** how often an idle sync looks for new events when nobody calls notify() (default 500 ms) */
  idleMs?: number
}

const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 10_000
const CONNECT_TIMEOUT_MS = 10_000
// a central server that stops answering (a dead link, no RST) must not hang the sync for ever
const QUERY_TIMEOUT_MS = 60_000
/** an idle sync still reads the central cursor this often, so a restored central database is refilled without new events */
const CENTRAL_CHECK_MS = 10_000
const PENDING_EVERY_MS = 1000
const STOP_GRACE_MS = 2000
const PENDING_CAP = 1_000_000

// the embedded outbox: the next rows after the cursor in arrival order, as one JSON text that goes
// to the central server unparsed, and the event at the batch's end for the cursor
const READ_BATCH = `
  SELECT count(*)::int AS n, max(local_id)::text AS last_id, json_agg(e ORDER BY local_id)::text AS rows,
    (array_agg(origin ORDER BY local_id DESC))[1] AS last_origin, (array_agg(seq ORDER BY local_id DESC))[1]::text AS last_seq
  FROM (SELECT origin, seq, id, namespace, type, payload, hlc, prev_seq, sig, local_id FROM bkg.events
        WHERE local_id > $1 ORDER BY local_id LIMIT $2) e`

// one statement for the whole batch. No conflict target: besides (origin, seq), an id already
// there under another key can only be a forged or corrupt row, and it must not stall the outbox
const WRITE_EVENTS = `
  INSERT INTO bkg.events (origin, seq, id, namespace, type, payload, hlc, prev_seq, sig, synced_by)
  SELECT origin, seq, id, namespace, type, coalesce(payload, 'null'::jsonb), hlc, prev_seq, sig, $2
  FROM jsonb_to_recordset($1::jsonb)
    AS x(origin text, seq bigint, id text, namespace text, type text, payload jsonb, hlc text, prev_seq bigint, sig text)
  ON CONFLICT DO NOTHING`

const WRITE_CURSOR = `
  INSERT INTO bkg.sync_cursors (node, local_id, last_origin, last_seq, updated_at) VALUES ($1, $2, $3, $4, now())
  ON CONFLICT (node) DO UPDATE SET local_id = EXCLUDED.local_id, last_origin = EXCLUDED.last_origin,
    last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at`

interface CentralCursor {
  local_id: string
  last_origin: string | null
  last_seq: string | null
}

/** the next batch, read while the previous one was written, valid if the central cursor is still where that one put it */
interface Prefetched {
  after: string
  origin: string | null
  seq: string | null
  batch: Promise<Batch>
}

interface Batch {
  n: number
  last_id: string | null
  rows: string | null
  last_origin: string | null
  last_seq: string | null
}

/**
 * Copies this node's events to a central PostgreSQL (`bkg start --sync <url>`), in arrival order.
 *
 * The embedded bkg.events ordered by local_id is the outbox. The cursor (the last local_id
 * delivered) lives in the central bkg.sync_cursors, never here: each batch reads it there, and the
 * rows and the cursor's new value are written in one central transaction, so a crash anywhere
 * loses nothing and, as the rows are keyed by (origin, seq), doubles nothing. A node restored from
 * an old backup, or a central database restored from one, therefore converges by itself.
 *
 * Central failures never reach the node: the sync logs them once per change of state, retries
 * with exponential backoff (250 ms to 10 s) and resumes from the central cursor.
 *
 * Stop it before closing the Database: a batch after the close would open the database again.
 */
export class CentralSync {
  private readonly options: CentralSyncOptions
  private readonly batchSize: number
  private readonly idleMs: number
  private client: pg.Client | undefined
  /** BEGIN, and the switch to bkg_sync when this login may (see central-schema.ts) */
  private begin = 'BEGIN'
  private state: CentralSyncState = 'stopped'
  private cursor = 0
  private pending: number | undefined
  private pendingAt = 0
  private lastError: string | null = null
  private rowsSynced = 0
  private running = false
  private loop: Promise<void> | undefined
  /** batches run one at a time, whether the loop or a caller of syncOnce() asks */
  private tail: Promise<unknown> = Promise.resolve()
  private wake: ((why: 'notify' | 'stop') => void) | undefined
  private notified = false
  private centralCheckedAt = 0
  private batchesBegun = 0
  /** the number of the last batch that succeeded */
  private batchDone = 0
  /** the number of the last batch that found fewer rows than batchSize: all was central then */
  private caughtUp = 0
  private prefetched: Prefetched | undefined

  constructor (options: CentralSyncOptions) {
    this.options = options
    this.batchSize = options.batchSize ?? 1000
    this.idleMs = options.idleMs ?? 500
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new Error('batchSize must be a positive integer')
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.state = 'connecting'
    this.options.log.info({ central: describeUrl(this.options.url), batchSize: this.batchSize }, 'central sync started')
    this.loop = this.run()
  }

  async stop (): Promise<void> {
    if (this.running) {
      this.running = false
      this.wake?.('stop')
      // a batch in flight may finish; one waiting on a dead server is cut off rather than left to the query timeout
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.loop, new Promise((resolve) => { timer = setTimeout(resolve, STOP_GRACE_MS) })])
      clearTimeout(timer)
      this.dropConnection()
      await this.loop
      this.loop = undefined
    }
    await this.tail
    this.dropConnection()
    this.state = 'stopped'
  }

  status (): CentralSyncStatus {
    return { state: this.state, cursor: this.cursor, pending: this.pending, lastError: this.lastError, rowsSynced: this.rowsSynced }
  }

  /** New events are stored here: sync them now rather than at the next poll. */
  notify (): void {
    this.notified = true
    this.wake?.('notify')
  }

  /** Sends one batch (at most batchSize rows) and moves the central cursor; resolves with the rows sent. */
  /** The certificate (PEM) a node left centrally, or null; runs between batches, never inside one. */
  async certificateOf (peerId: string): Promise<string | null> {
    const run = this.tail.then(async () => {
      const client = await this.connection()
      await client.query(this.begin)
      try {
        return (await client.query<{ pem: string }>('SELECT pem FROM bkg.node_certificates WHERE peer_id = $1', [peerId])).rows[0]?.pem ?? null
      } finally {
        // a read-only transaction: nothing to lose; a broken connection reports through its 'error' handler
        await client.query('COMMIT').catch(() => {})
      }
    })
    this.tail = run.catch(() => {}) // the caller gets run's error; the tail only has to go on with the next task
    return await run
  }

  async syncOnce (): Promise<number> {
    const run = this.tail.then(async () => await this.batch())
    this.tail = run.catch(() => {}) // the caller gets run's error; the tail only has to go on with the next task
    return await run
  }

  /**
   * Resolves once every event stored here before the call is in the central database. With the
   * loop started it waits for the loop (which retries failures); otherwise it sends the batches
   * itself and a failure rejects. Rejects when `timeoutMs` passes first.
   */
  async drain (timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    const target = await this.localHighest()
    // the cursor in memory may be stale (the central one was reset or restored): only a batch begun
    // after this call, which read the central cursor, can tell that the events are there
    const begun = this.batchesBegun
    while (!(this.caughtUp > begun || (this.batchDone > begun && this.cursor >= target))) {
      if (Date.now() > deadline) {
        throw new Error(`central sync not caught up within ${timeoutMs} ms: cursor ${this.cursor} of ${target}, state ${this.state}, last error ${this.lastError ?? 'none'}`)
      }
      if (this.running) {
        this.notify()
        await sleep(20)
      } else {
        await this.syncOnce()
      }
    }
  }

  private async run (): Promise<void> {
    let failures = 0
    while (this.running) {
      try {
        const sent = await this.syncOnce()
        if (failures > 0) this.options.log.info({ cursor: this.cursor }, 'central sync: central database reachable again, resumed from its cursor')
        failures = 0
        if (sent >= this.batchSize) {
          this.state = 'syncing'
          continue
        }
        this.state = 'idle'
        await this.waitForWork()
      } catch (err) {
        this.dropConnection()
        if (!this.running) break
        this.lastError = reason(err)
        if (this.state !== 'retrying') this.options.log.warn({ reason: this.lastError }, 'central sync failed; retrying with backoff')
        else this.options.log.debug({ reason: this.lastError, failures }, 'central sync still failing')
        this.state = 'retrying'
        // notify() does not cut a backoff short: a burst of events must not hammer a server that is down
        await this.sleep(backoff(failures++), false)
      }
    }
  }

  /** Until notify(), new local events, or the periodic look at the central cursor. */
  private async waitForWork (): Promise<void> {
    while (this.running) {
      if (this.notified) {
        this.notified = false
        return
      }
      if (Date.now() - this.centralCheckedAt >= CENTRAL_CHECK_MS) return
      if (await this.localHighest() > this.cursor) return
      await this.sleep(this.idleMs, true)
    }
  }

  private async batch (): Promise<number> {
    const { db, nodeId } = this.options
    const number = ++this.batchesBegun
    // a node that never stored an event has no database, and the sync is no reason to create one
    if (!db.isOpen && !await db.exists()) {
      this.pending = 0
      this.batchDone = this.caughtUp = number
      return 0
    }
    const client = await this.connection()
    const prefetched = this.prefetched
    this.prefetched = undefined
    try {
      await client.query(this.begin)
      // FOR UPDATE: a second process with this node's id waits instead of racing the cursor
      const central: CentralCursor | undefined = (await client.query<CentralCursor>(
        'SELECT local_id::text, last_origin, last_seq::text FROM bkg.sync_cursors WHERE node = $1 FOR UPDATE', [nodeId])).rows[0]
      let after = central == null ? 0 : Number(central.local_id)
      let reset = false
      let batch: Batch
      if (prefetched != null && central != null && prefetched.after === central.local_id &&
          prefetched.origin === central.last_origin && prefetched.seq === central.last_seq) {
        // the cursor is the one the previous batch wrote: its check would only re-read that batch's last row
        batch = await prefetched.batch
      } else {
        const read = await db.asNode(async (tx) => {
          const fresh = await this.cursorHolds(tx, central) ? after : 0
          return { fresh, batch: await this.readBatch(tx, fresh) }
        })
        reset = read.fresh !== after
        after = read.fresh
        batch = read.batch
      }
      if (batch.n > 0) {
        const writing = client.query(WRITE_EVENTS, [batch.rows, nodeId])
        // a full batch means more: the embedded database reads the next one while the central server writes this one
        if (batch.n === this.batchSize) this.prefetch(batch)
        await writing
        await client.query(WRITE_CURSOR, [nodeId, batch.last_id, batch.last_origin, batch.last_seq])
      } else if (reset) {
        await client.query(WRITE_CURSOR, [nodeId, 0, null, null])
      }
      await client.query('COMMIT')
      this.cursor = batch.n > 0 ? Number(batch.last_id) : after
      this.rowsSynced += batch.n
      this.centralCheckedAt = Date.now()
      this.batchDone = number
      if (batch.n < this.batchSize) this.caughtUp = number
      return batch.n
    } catch (err) {
      // whatever failed, the next batch starts on a fresh connection and from the central cursor
      this.prefetched = undefined
      await client.query('ROLLBACK').catch(() => {}) // the failure is rethrown below, and the connection dropped either way
      this.dropConnection()
      throw err
    }
  }

  /**
   * Whether the central cursor belongs to this database: the event it names is here at that
   * local_id. A node restored from an older backup hands out those local_ids again, to other
   * events, which would never be sent; then everything is sent again (idempotent, if costly).
   */
  private async cursorHolds (tx: Transaction, central: CentralCursor | undefined): Promise<boolean> {
    // no cursor, or one set by hand without its event: nothing to check it against
    if (central == null || central.last_origin == null || Number(central.local_id) === 0) return true
    const here = (await tx.query<{ origin: string, seq: string }>('SELECT origin, seq::text FROM bkg.events WHERE local_id = $1', [central.local_id])).rows[0]
    if (here?.origin === central.last_origin && here?.seq === central.last_seq) return true
    this.options.log.warn({ centralCursor: Number(central.local_id) }, 'central sync: the central cursor names an event this database does not hold at that place (restored from a backup?); sending every event again')
    return false
  }

  /**
   * The next rows after `after` in local_id order. The embedded database has one connection, so
   * its transactions never interleave and local_ids become visible in order: no event can appear
   * later below a cursor that has passed it (the gap a multi-connection outbox has to guard).
   */
  private async readBatch (tx: Transaction, after: number): Promise<Batch> {
    const batch = (await tx.query<Batch>(READ_BATCH, [after, this.batchSize])).rows[0]
    if (batch.n < this.batchSize) {
      this.pending = 0
    } else if (Date.now() - this.pendingAt >= PENDING_EVERY_MS) {
      this.pendingAt = Date.now()
      this.pending = (await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM (SELECT 1 FROM bkg.events WHERE local_id > $1 LIMIT ${PENDING_CAP}) p`, [batch.last_id])).rows[0].n
    }
    return batch
  }

  private prefetch (previous: Batch): void {
    const after = Number(previous.last_id)
    const batch = this.options.db.asNode(async (tx) => await this.readBatch(tx, after))
    // used by the next batch, or dropped: either way a failure must not be an unhandled rejection
    batch.catch(() => {})
    this.prefetched = { after: previous.last_id!, origin: previous.last_origin, seq: previous.last_seq, batch }
  }

  private async connection (): Promise<pg.Client> {
    if (this.client != null) return this.client
    const client = new pg.Client({
      connectionString: this.options.url,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      keepAlive: true,
      application_name: 'bkg-sync'
    })
    // an idle connection that breaks reports here; unheard, the 'error' event would end the process
    client.on('error', (err) => {
      this.options.log.debug({ reason: reason(err) }, 'central sync: connection lost')
      if (this.client === client) this.client = undefined
    })
    try {
      await client.connect()
      await migrateCentral(client)
      const member = (await client.query<{ member: boolean }>("SELECT pg_has_role(current_user, $1, 'MEMBER') AS member", [SYNC_ROLE])).rows[0].member
      this.begin = member ? `BEGIN; SET LOCAL ROLE ${SYNC_ROLE}` : 'BEGIN'
      if (this.options.certificatePem != null) {
        await client.query(this.begin)
        await client.query('INSERT INTO bkg.node_certificates (peer_id, pem) VALUES ($1, $2) ON CONFLICT (peer_id) DO UPDATE SET pem = EXCLUDED.pem, updated_at = now()', [this.options.nodeId, this.options.certificatePem])
        await client.query('COMMIT')
      }
    } catch (err) {
      client.end().catch(() => {}) // the failure is thrown below; an end that fails finds the connection gone already
      throw err
    }
    this.client = client
    return client
  }

  private dropConnection (): void {
    const client = this.client
    this.client = undefined
    client?.end().catch(() => {}) // dropped after a failure: an end that fails finds the connection gone already
  }

  private async localHighest (): Promise<number> {
    const { db } = this.options
    if (!db.isOpen && !await db.exists()) return 0
    return await db.asNode(async (tx) => Number((await tx.query<{ id: string | null }>('SELECT max(local_id)::text AS id FROM bkg.events')).rows[0].id ?? 0))
  }

  private async sleep (ms: number, wakeOnNotify: boolean): Promise<void> {
    if (!this.running) return
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        if (this.wake === wake) this.wake = undefined
        resolve()
      }
      const wake = (why: 'notify' | 'stop'): void => {
        if (why === 'stop' || wakeOnNotify) done()
      }
      const timer = setTimeout(done, ms)
      this.wake = wake
    })
  }
}

function backoff (failures: number): number {
  const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** failures)
  // ±20 %: nodes that lost the same central server do not all come back in the same millisecond
  return Math.round(ms * (0.8 + Math.random() * 0.4))
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** The reason of a failure as one line; a refused connection to a name with several addresses is an AggregateError without a message. */
export function reason (err: unknown): string {
  if (err instanceof AggregateError && err.message === '') return err.errors.map(reason).join('; ')
  if (err instanceof Error) return err.message !== '' ? err.message : (err as NodeJS.ErrnoException).code ?? err.name
  return String(err)
}

/** host, port and database: never the password */
export function describeUrl (url: string): string {
  try {
    const parsed = new URL(url)
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`
  } catch {
    return '(unparsable url)'
  }
}
