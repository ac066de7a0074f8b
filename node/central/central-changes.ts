import pg from 'pg'
import type { Connection, Submittable } from 'pg'
import type { Logger } from 'pino'
import type { SignedEvent } from '../../protocols/events.ts'
import { CENTRAL_PUBLICATION, migrateCentral } from './central-schema.ts'
import { describeUrl, reason } from './central-sync.ts'

/**
 * Rows inserted into the central bkg.events, streamed back to a node (optional): by another
 * node's sync, or by an operator's SQL. It is logical replication with the built-in pgoutput
 * plugin over the streaming replication protocol (pg opens `replication: 'database'` connections
 * and hands a custom query every CopyData message), read by the small decoder below: changes
 * arrive as they commit, without polling, without an extension on the server, in the format
 * PostgreSQL's own subscribers use rather than test_decoding's text, which is meant for tests.
 *
 * Limits: protocol version 1, so a transaction arrives whole at its commit (no streaming of large
 * ones in progress); inserts only (the publication publishes nothing else); a new slot starts at
 * its creation, so rows committed before it are not sent (the node has its own history for those).
 *
 * Delivery is at least once, in commit order: the slot is told a transaction is consumed
 * (standby status update) only after onEvent resolved for each of its rows, so a crash, a thrown
 * onEvent or a lost connection redelivers from the last acknowledged commit. A restart of the
 * server may redeliver more: before PostgreSQL 17 a slot's acknowledged position reaches disk
 * only now and then, not at shutdown. Events are keyed by (origin, seq) and ingest is idempotent,
 * so a redelivery is harmless.
 *
 * Needs: wal_level = logical on the server, a login with the REPLICATION attribute (or a
 * superuser) to create and read the slot, and the publication bkg_events (central-schema.ts).
 * A slot keeps the server's WAL until its consumer has read it: drop the slot of a node that
 * is gone for good (SELECT pg_drop_replication_slot('<slot>')), or bound it with
 * max_slot_wal_keep_size. Rows a node synced itself can be left out with skipSyncedBy.
 */

export type CentralEvent = SignedEvent & {
  /** the PeerId of the node whose sync delivered the row; null when it was inserted by SQL */
  syncedBy: string | null
  syncedAt: string
}

export interface CentralChangesOptions {
  url: string
  /** the replication slot, one per consuming node: 1-63 of a-z 0-9 _; created when missing */
  slot: string
  onEvent: (event: CentralEvent) => void | Promise<void>
  log?: Logger
  /** leave out the rows this PeerId's sync delivered (a node's own events coming back) */
  skipSyncedBy?: string
}

export interface CentralChangesStatus {
  state: 'connecting' | 'streaming' | 'retrying' | 'closed'
  /** the WAL position up to which every change was handled and acknowledged to the slot */
  flushedLsn: string
  lastError: string | null
  delivered: number
}

export interface CentralChanges {
  /** resolves when the stream first runs (slot there, replication started); rejects if closed before */
  readonly ready: Promise<void>
  status: () => CentralChangesStatus
  close: () => Promise<void>
}

export function subscribeCentralChanges (options: CentralChangesOptions): CentralChanges {
  if (!/^[a-z0-9_]{1,63}$/.test(options.slot)) throw new Error(`invalid replication slot name ${JSON.stringify(options.slot)}: 1-63 of a-z 0-9 _`)
  return new Subscription(options)
}

const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 10_000
const CONNECT_TIMEOUT_MS = 10_000
/** how often the slot is told what was handled, when something was */
const STATUS_EVERY_MS = 1000
/** beyond this many changes waiting for onEvent, reading from the server pauses */
const QUEUE_HIGH = 5000
const QUEUE_LOW = 500
/** microseconds from the Unix epoch to the PostgreSQL epoch (2000-01-01) */
const PG_EPOCH_US = 946_684_800_000_000n

type Item = { kind: 'begin' } | { kind: 'event', event: CentralEvent } | { kind: 'commit', lsn: bigint } | { kind: 'keepalive', lsn: bigint }

interface Relation {
  schema: string
  table: string
  columns: string[]
}

class Subscription implements CentralChanges {
  readonly ready: Promise<void>
  private readonly options: CentralChangesOptions
  private resolveReady!: () => void
  private rejectReady!: (err: Error) => void
  private state: CentralChangesStatus['state'] = 'connecting'
  private lastError: string | null = null
  private delivered = 0
  /** handled and acknowledged (or to be acknowledged at the next status update) */
  private flushed = 0n
  private reported = 0n
  private client: pg.Client | undefined
  private readonly relations = new Map<number, Relation>()
  private queue: Item[] = []
  private pumping = false
  private inTransaction = false
  private closed = false
  private failures = 0
  private failStream: ((err: Error) => void) | undefined
  /** which stream is current: messages still arriving on a failed one are dropped */
  private generation = 0
  private wakeBackoff: (() => void) | undefined
  private readonly loop: Promise<void>

  constructor (options: CentralChangesOptions) {
    this.options = options
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve
      this.rejectReady = reject
    })
    // nobody need await ready: a rejection at close must not count as unhandled
    this.ready.catch(() => {})
    this.loop = this.run()
  }

  status (): CentralChangesStatus {
    return { state: this.state, flushedLsn: formatLsn(this.flushed), lastError: this.lastError, delivered: this.delivered }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.rejectReady(new Error('central changes subscription closed'))
    this.wakeBackoff?.()
    this.report()
    this.client?.end().catch(() => {}) // closing: ending it is what stops the stream, and an end that fails finds it gone already
    await this.loop
    this.state = 'closed'
  }

  private async run (): Promise<void> {
    while (!this.closed) {
      try {
        await this.stream()
      } catch (err) {
        if (this.closed) break
        this.lastError = reason(err)
        if (this.state !== 'retrying') this.options.log?.warn({ reason: this.lastError, slot: this.options.slot }, 'central changes: stream failed; retrying with backoff')
        this.state = 'retrying'
      } finally {
        this.client?.end().catch(() => {}) // the stream ended or failed (logged above): its connection is usually gone already
        this.client = undefined
        // what was not acknowledged comes again from the slot
        this.queue = []
        this.inTransaction = false
        this.relations.clear()
      }
      if (this.closed) break
      const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.failures++)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms)
        this.wakeBackoff = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.wakeBackoff = undefined
    }
    this.state = 'closed'
  }

  /** One replication connection, from the slot's position until it ends; rejects when it breaks. */
  private async stream (): Promise<void> {
    // the slot's position is the truth, as the central cursor is for the sync: it may have been
    // recreated, or gone back at a restart of the server
    this.flushed = await this.prepareSlot()
    this.reported = this.flushed
    const config: pg.ClientConfig & { replication: 'database' } = {
      connectionString: this.options.url,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      keepAlive: true,
      application_name: 'bkg-changes',
      // timestamps in the tuples are text in the session's style: make it the one timestamp() reads
      options: '-c datestyle=ISO -c timezone=UTC',
      replication: 'database'
    }
    const generation = ++this.generation
    const client = new pg.Client(config)
    client.on('error', (err) => this.options.log?.debug({ reason: reason(err) }, 'central changes: connection lost'))
    this.client = client
    await client.connect()
    if (this.closed) return
    const timer = setInterval(() => this.report(), STATUS_EVERY_MS)
    try {
      await new Promise<void>((resolve, reject) => {
        this.failStream = reject
        client.query(new ReplicationStream(
          `START_REPLICATION SLOT ${this.options.slot} LOGICAL 0/0 (proto_version '1', publication_names '${CENTRAL_PUBLICATION}')`,
          {
            started: () => {
              this.failures = 0
              if (this.state === 'retrying') this.options.log?.info({ slot: this.options.slot }, 'central changes: streaming again')
              this.state = 'streaming'
              this.options.log?.debug({ central: describeUrl(this.options.url), slot: this.options.slot, from: formatLsn(this.flushed) }, 'central changes streaming')
              this.resolveReady()
            },
            data: (chunk) => {
              if (generation !== this.generation) return
              try {
                this.receive(chunk)
              } catch (err) {
                reject(err)
                client.end().catch(() => {}) // the failure goes out through reject; an end that fails finds the connection gone
              }
            },
            ended: (err) => err == null ? resolve() : reject(err)
          }))
      })
    } finally {
      clearInterval(timer)
      this.failStream = undefined
    }
  }

  /** Migrates the central schema, creates the slot when missing, and resolves with its acknowledged position. */
  private async prepareSlot (): Promise<bigint> {
    const client = new pg.Client({ connectionString: this.options.url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, application_name: 'bkg-changes' })
    // a connection that breaks also fails the query in progress, which throws below; unheard, this event would end the process
    client.on('error', () => {})
    try {
      await client.connect()
      await migrateCentral(client)
      const find = async () => (await client.query<{ plugin: string, lsn: string | null }>(
        'SELECT plugin, confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [this.options.slot])).rows[0]
      let slot = await find()
      if (slot == null) {
        try {
          await client.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [this.options.slot])
        } catch (err) {
          // another process made it first
          if ((err as { code?: string }).code !== '42710') throw err
        }
        slot = await find()
      }
      if (slot == null) throw new Error(`replication slot ${this.options.slot} vanished as it was made`)
      if (slot.plugin !== 'pgoutput') throw new Error(`replication slot ${this.options.slot} uses ${slot.plugin}, not pgoutput`)
      return slot.lsn == null ? 0n : parseLsn(slot.lsn)
    } finally {
      await client.end().catch(() => {}) // the slot's position is read (or the failure thrown): only the socket is left to free
    }
  }

  /** Decodes one CopyData message at once: pg reuses the buffer it points into. */
  private receive (chunk: Buffer): void {
    const kind = chunk[0]
    if (kind === 0x6b) { // 'k' primary keepalive: walEnd, sendTime, replyRequested
      this.enqueue({ kind: 'keepalive', lsn: chunk.readBigUInt64BE(1) })
      if (chunk[17] === 1) this.report(true)
      return
    }
    if (kind !== 0x77) return // only 'w' XLogData carries changes
    const message = new Reader(chunk, 25) // after 'w', dataStart, walEnd, sendTime
    switch (String.fromCharCode(message.byte())) {
      case 'B':
        this.enqueue({ kind: 'begin' })
        break
      case 'C': {
        message.byte() // flags
        message.int64() // the commit record's LSN
        this.enqueue({ kind: 'commit', lsn: message.int64() }) // the end of the transaction
        break
      }
      case 'R': {
        const id = message.int32()
        const schema = message.cstring()
        const table = message.cstring()
        message.byte() // replica identity
        const columns: string[] = []
        for (let count = message.int16(); count > 0; count--) {
          message.byte() // flags
          columns.push(message.cstring())
          message.int32() // type oid
          message.int32() // type modifier
        }
        this.relations.set(id, { schema, table, columns })
        break
      }
      case 'I': {
        const relation = this.relations.get(message.int32())
        if (relation == null) throw new Error('pgoutput: an insert into a relation that was not described')
        message.byte() // 'N': a new tuple
        const values = message.tuple()
        if (relation.schema !== 'bkg' || relation.table !== 'events') break
        const row = new Map(relation.columns.map((name, i) => [name, values[i]]))
        const event = toEvent(row)
        if (this.options.skipSyncedBy == null || event.syncedBy !== this.options.skipSyncedBy) this.enqueue({ kind: 'event', event })
        break
      }
      // Origin, Type, Update, Delete, Truncate: none of them carries an insert
    }
  }

  private enqueue (item: Item): void {
    this.queue.push(item)
    if (this.queue.length > QUEUE_HIGH) this.client?.connection.stream.pause()
    if (!this.pumping) void this.pump()
  }

  /** Hands the changes to onEvent one at a time, in commit order. */
  private async pump (): Promise<void> {
    this.pumping = true
    try {
      while (this.queue.length > 0 && !this.closed) {
        const queue = this.queue
        const item = queue.shift()!
        if (queue.length === QUEUE_LOW) this.client?.connection.stream.resume()
        if (item.kind === 'begin') {
          this.inTransaction = true
        } else if (item.kind === 'event') {
          await this.options.onEvent(item.event)
          this.delivered++
        } else if (item.kind === 'commit') {
          this.inTransaction = false
          // the stream was replaced while onEvent ran: this commit is the old stream's, and comes again
          if (queue === this.queue) this.flushed = maxLsn(this.flushed, item.lsn)
        } else if (!this.inTransaction && queue === this.queue) {
          // a keepalive after everything before it was handled: the WAL up to there holds nothing more for us
          this.flushed = maxLsn(this.flushed, item.lsn)
        }
      }
    } catch (err) {
      // the stream ends and is opened again from the slot: the change comes again, but what was
      // handled before it is acknowledged first, so it does not. Nothing after the failed change
      // may be handled or acknowledged: neither what is queued nor what still arrives
      this.queue = []
      this.generation++
      this.report()
      this.failStream?.(err instanceof Error ? err : new Error(String(err)))
      this.client?.end().catch(() => {}) // the failure goes out through failStream; an end that fails finds the connection gone
    } finally {
      this.pumping = false
    }
  }

  /** Standby status update: written, flushed and applied are all "handled by onEvent". */
  private report (force = false): void {
    if (this.flushed === 0n || (!force && this.flushed === this.reported)) return
    const connection = this.client?.connection as unknown as CopyConnection | undefined
    if (connection == null || this.state !== 'streaming') return
    const message = Buffer.alloc(34)
    message[0] = 0x72 // 'r'
    message.writeBigUInt64BE(this.flushed, 1)
    message.writeBigUInt64BE(this.flushed, 9)
    message.writeBigUInt64BE(this.flushed, 17)
    message.writeBigUInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_US, 25)
    message[33] = 0
    connection.sendCopyFromChunk(message)
    this.reported = this.flushed
  }
}

/** The parts of pg's Connection a copy-both stream needs beyond its typings. */
interface CopyConnection {
  sendCopyFromChunk: (chunk: Buffer) => void
}

interface StreamHandlers {
  started: () => void
  data: (chunk: Buffer) => void
  ended: (err?: Error) => void
}

/**
 * START_REPLICATION as a pg query: pg passes every backend message of the active query to it, so
 * the CopyData of the copy-both stream arrive here; status updates go out on the same connection.
 */
class ReplicationStream implements Submittable {
  private readonly sql: string
  private readonly handlers: StreamHandlers
  private done = false

  constructor (sql: string, handlers: StreamHandlers) {
    this.sql = sql
    this.handlers = handlers
  }

  submit (connection: Connection): void {
    connection.once('replicationStart', () => this.handlers.started())
    connection.query(this.sql)
  }

  handleCopyData (message: { chunk: Buffer }): void {
    this.handlers.data(message.chunk)
  }

  handleError (err: Error): void {
    this.end(err)
  }

  handleReadyForQuery (): void {
    this.end()
  }

  handleCommandComplete (): void {}
  handleRowDescription (): void {}
  handleDataRow (): void {}
  handleEmptyQuery (): void {}

  private end (err?: Error): void {
    if (this.done) return
    this.done = true
    this.handlers.ended(err)
  }
}

class Reader {
  private readonly buffer: Buffer
  private offset: number

  constructor (buffer: Buffer, offset: number) {
    this.buffer = buffer
    this.offset = offset
  }

  byte (): number {
    return this.buffer[this.offset++]
  }

  int16 (): number {
    const value = this.buffer.readInt16BE(this.offset)
    this.offset += 2
    return value
  }

  int32 (): number {
    const value = this.buffer.readInt32BE(this.offset)
    this.offset += 4
    return value
  }

  int64 (): bigint {
    const value = this.buffer.readBigUInt64BE(this.offset)
    this.offset += 8
    return value
  }

  cstring (): string {
    const end = this.buffer.indexOf(0, this.offset)
    if (end < 0) throw new Error('pgoutput: unterminated string')
    const value = this.buffer.toString('utf8', this.offset, end)
    this.offset = end + 1
    return value
  }

  /** TupleData: per column null ('n'), unchanged TOAST ('u', never in an insert) or text ('t'). */
  tuple (): Array<string | null> {
    const values: Array<string | null> = []
    for (let count = this.int16(); count > 0; count--) {
      const kind = String.fromCharCode(this.byte())
      if (kind === 't') {
        const length = this.int32()
        values.push(this.buffer.toString('utf8', this.offset, this.offset + length))
        this.offset += length
      } else if (kind === 'n' || kind === 'u') {
        values.push(null)
      } else {
        throw new Error(`pgoutput: tuple column kind ${JSON.stringify(kind)} (only text format is asked for)`)
      }
    }
    return values
  }
}

function toEvent (row: Map<string, string | null>): CentralEvent {
  const text = (name: string): string => {
    const value = row.get(name)
    if (value == null) throw new Error(`pgoutput: bkg.events row without ${name}`)
    return value
  }
  return {
    v: 1,
    id: text('id'),
    namespace: text('namespace'),
    type: text('type'),
    payload: JSON.parse(text('payload')) as SignedEvent['payload'],
    origin: text('origin'),
    seq: Number(text('seq')),
    prevSeq: Number(text('prev_seq')),
    hlc: text('hlc'),
    sig: text('sig'),
    syncedBy: row.get('synced_by') ?? null,
    syncedAt: timestamp(text('synced_at'))
  }
}

/** A timestamptz in PostgreSQL's ISO output ('2026-01-02 03:04:05.678+00') as an ISO 8601 string. */
function timestamp (value: string): string {
  const date = new Date(value.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00').replace(/([+-]\d\d)(\d\d)$/, '$1:$2'))
  return Number.isNaN(date.getTime()) ? value : date.toISOString()
}

function parseLsn (text: string): bigint {
  const [high, low] = text.split('/')
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`)
}

function formatLsn (lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}

const maxLsn = (a: bigint, b: bigint): bigint => a > b ? a : b
