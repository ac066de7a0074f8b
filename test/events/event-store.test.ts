import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { database, type Database } from '../../node/db/index.ts'
import { defaultCacheDir } from '../../node/config/index.ts'
import { EventStore } from '../../node/events/event-store.ts'
import type { SignedEvent } from '../../protocols/events.ts'
import { tempDir } from '../helpers/mesh.ts'

const ORIGIN = '12D3KooWCLpQN91xgM4Qoi6bYBPA69cbQxswMvgHzjWQANC5Xx5a'
const event = (namespace: string, seq: number, prevSeq: number): SignedEvent => ({
  v: 1, id: `e${String(seq).padStart(21, '0')}`, namespace, type: 't', payload: { seq }, origin: ORIGIN, seq, prevSeq, hlc: '000000000000001-00000', sig: 'x'
})

describe('event store: idempotent inserts and chain heads', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: Database
  let store: EventStore

  beforeAll(async () => {
    tmp = await tempDir()
    db = database({ dir: `${tmp.dir}/db`, templateDir: defaultCacheDir() })({ log: pino({ level: 'silent' }) })
    store = new EventStore(db)
  }, 60_000)

  afterAll(async () => {
    await db?.stop()
    await tmp?.remove()
  })

  it('a duplicate is a no-op', async () => {
    expect((await store.ingest([event('a', 1, 0)])).length).toBe(1)
    expect((await store.ingest([event('a', 1, 0), event('a', 1, 0)])).length).toBe(0)
    expect(store.head(ORIGIN, 'a')).toBe(1)
  })

  it('a head stops at a gap and moves over it when the gap is filled, across other namespaces\' numbers', async () => {
    // origin's seq 2 went to namespace b; a's chain is 1 → 3 → 4 → 6
    await store.ingest([event('a', 4, 3), event('a', 6, 4)])
    expect(store.head(ORIGIN, 'a')).toBe(1)
    await store.ingest([event('a', 3, 1)])
    expect(store.head(ORIGIN, 'a')).toBe(6)
    expect(store.head(ORIGIN, 'b')).toBe(0)
    expect(store.headsIn(new Set(['a']))).toEqual([{ origin: ORIGIN, namespace: 'a', seq: 6 }])
    expect(store.headsIn(new Set(['b']))).toEqual([])
  })

  it('heads and waiting events survive a reopen', async () => {
    await store.ingest([event('b', 9, 7)])
    await db.stop()
    const reopened = new EventStore(db)
    await reopened.load()
    expect(reopened.head(ORIGIN, 'a')).toBe(6)
    expect(reopened.head(ORIGIN, 'b')).toBe(0)
    await reopened.ingest([event('b', 2, 0), event('b', 7, 2)])
    expect(reopened.head(ORIGIN, 'b')).toBe(9)
    expect(reopened.highestSeq(ORIGIN)).toBe(9)
    expect((await reopened.range(ORIGIN, 'b', 2, 10)).map((e) => e.seq)).toEqual([7, 9])
  })
})
