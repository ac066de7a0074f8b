import { rm } from 'node:fs/promises'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NodeConfig } from '../../node/config/schema.ts'
import { createNode } from '../../node/create-node.ts'
import { eventsTopic } from '../../protocols/ids.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'
import { runBkgOk } from '../helpers/cli.ts'
import { openSse } from '../helpers/sse.ts'

function tokenFor (node: TestNode, namespace: string, role: 'reader' | 'writer' | 'admin'): string {
  const lines = runBkgOk(['token', 'create', '--data', node.paths.dir, '--namespace', namespace, '--role', role], node.paths.dir).stdout.trim().split('\n')
  return lines.at(-1)!
}

async function eventsOn (node: TestNode, namespace: string, token?: string): Promise<any[]> {
  const all: any[] = []
  let after: string | null = '0'
  while (after != null) {
    const { status, body }: { status: number, body: any } = await node.api('GET', `/api/v1/events?namespace=${namespace}&limit=1000&after=${after}`, undefined, token)
    expect(status, JSON.stringify(body)).toBe(200)
    all.push(...body.events)
    after = body.next
  }
  return all
}

describe('signed events across the mesh', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let a: TestNode
  let b: TestNode
  let c: TestNode
  let outsider: TestNode

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    a = await mesh.addNode('a', { roles: ['bootstrap', 'member'], namespaces: ['lab', 'ops'] })
    await a.start()
    const join = ['--bootstrap', a.addrs[0]]
    b = await mesh.addNode('b', { namespaces: ['lab', 'ops'], args: join })
    c = await mesh.addNode('c', { namespaces: ['lab'], args: join })
    outsider = await mesh.addNode('outsider', { namespaces: ['ops'], args: join })
    await Promise.all([b.start(), c.start(), outsider.start()])
    await waitFor('mesh formed', async () => (await peerIdsOf(a)).length === 3, 30_000)
  }, 120_000)

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('an event published on A reaches a filtered SSE subscriber on C, and only the namespace\'s nodes store it', async () => {
    const writerA = tokenFor(a, 'lab', 'writer')
    const readerC = tokenFor(c, 'lab', 'reader')
    const stream = await openSse(`${c.url}/api/v1/events/stream?namespace=lab&type=reading&filter=${encodeURIComponent('celsius=gt.20')}`, readerC)
    try {
      // the first gossip needs the topic mesh: publish until C has one
      const cold = await a.api('POST', '/api/v1/events', { namespace: 'lab', type: 'reading', payload: { celsius: 10 } }, writerA)
      expect(cold.status, JSON.stringify(cold.body)).toBe(201)
      expect(cold.body).toMatchObject({ namespace: 'lab', type: 'reading', origin: a.peerId, seq: 1, prevSeq: 0 })
      await waitFor('first event on C', async () => (await eventsOn(c, 'lab', readerC)).length === 1, 20_000)
      const hot = await a.api('POST', '/api/v1/events', { namespace: 'lab', type: 'reading', payload: { celsius: 25.5, sensor: 'x' } }, writerA)
      expect(hot.status, JSON.stringify(hot.body)).toBe(201)
      await a.api('POST', '/api/v1/events', { namespace: 'lab', type: 'other', payload: { celsius: 99 } }, writerA)
      await waitFor('filtered event on the stream', async () => stream.frames.some((f) => f.event === 'event'), 10_000)
      await new Promise((resolve) => setTimeout(resolve, 300))
      const delivered = stream.frames.filter((f) => f.event === 'event').map((f) => f.data)
      expect(delivered.map((e) => e.id)).toEqual([hot.body.id])
      expect(delivered[0]).toMatchObject({ origin: a.peerId, payload: { celsius: 25.5, sensor: 'x' } })
    } finally {
      stream.close()
    }
    // B (lab) has them too; the outsider (ops only) never stored a lab event
    await waitFor('events on B', async () => (await eventsOn(b, 'lab')).length === 3, 10_000)
    expect(await eventsOn(outsider, 'lab')).toEqual([])
  })

  it('a namespace token never reads or writes another namespace', async () => {
    const labWriter = tokenFor(a, 'lab', 'writer')
    const opsReader = tokenFor(a, 'ops', 'reader')
    expect((await a.api('GET', '/api/v1/events?namespace=ops', undefined, labWriter)).status).toBe(403)
    const write = await a.api('POST', '/api/v1/events', { namespace: 'ops', type: 't', payload: {} }, labWriter)
    expect(write.status).toBe(403)
    expect(write.body.error.code).toBe('forbidden')
    const readerWrite = await a.api('POST', '/api/v1/events', { namespace: 'ops', type: 't', payload: {} }, opsReader)
    expect(readerWrite.status).toBe(403)
    await expect(openSse(`${a.url}/api/v1/events/stream?namespace=ops`, labWriter)).rejects.toMatchObject({ status: 403 })
    // a namespace the node is not certified for
    const uncertified = await c.api('POST', '/api/v1/events', { namespace: 'ops', type: 't', payload: {} })
    expect(uncertified.status).toBe(403)
    expect(uncertified.body.error.code).toBe('namespace_not_certified')
  })

  it('a peer whose certificate lacks the namespace is not let into its gossip topic, even when it subscribes', async () => {
    // an admitted node (certified for ops only) that tries to listen to lab's topic itself
    const spyDir = await mesh.addNode('spy', { namespaces: ['ops'] })
    const spy = await createNode({
      dataDir: spyDir.paths.dir,
      config: NodeConfig.parse({ listen: ['/ip4/127.0.0.1/tcp/0'], api: '127.0.0.1:0', bootstrap: [a.addrs[0]], logLevel: 'silent' }),
      log: pino({ level: 'silent' })
    })
    await spy.start()
    try {
      await waitFor('spy admitted', async () => (await peerIdsOf(a)).includes(spy.peerId), 20_000)
      const heard = new Set<string>()
      spy.host.services.pubsub.addEventListener('message', (event) => { heard.add(event.detail.topic) })
      spy.host.services.pubsub.subscribe(eventsTopic('lab'))
      await new Promise((resolve) => setTimeout(resolve, 2500))
      // the control: the same spy does receive the namespace it is certified for
      await waitFor('ops event reaches the spy', async () => {
        await a.api('POST', '/api/v1/events', { namespace: 'ops', type: 'probe', payload: {} })
        await a.api('POST', '/api/v1/events', { namespace: 'lab', type: 'probe', payload: {} })
        return heard.has(eventsTopic('ops'))
      }, 20_000, 500)
      await new Promise((resolve) => setTimeout(resolve, 1000))
      expect(heard.has(eventsTopic('lab'))).toBe(false)
    } finally {
      await spy.stop()
    }
  })

  it('bad input gets a clear 400', async () => {
    const bad = [
      { namespace: 'Lab!', type: 't', payload: {} },
      { namespace: 'lab', type: '', payload: {} },
      { namespace: 'lab', type: 't', payload: { big: 'x'.repeat(70_000) } },
      { namespace: 'lab', type: 't', payload: {}, extra: 1 }
    ]
    for (const body of bad) {
      const response = await a.api('POST', '/api/v1/events', body)
      expect(response.status, JSON.stringify(body).slice(0, 60)).toBe(400)
      expect(response.body.error.code).toBe('invalid_request')
    }
    const cursor = await a.api('GET', '/api/v1/events?namespace=lab&after=nosuchevent0000000000')
    expect(cursor.status).toBe(400)
    expect(cursor.body.error.code).toBe('unknown_cursor')
    const filter = await fetch(`${a.url}/api/v1/events/stream?namespace=lab&filter=celsius%3Dbetween.1`, { headers: { authorization: `Bearer ${a.token}` } })
    expect(filter.status).toBe(400)
    expect(((await filter.json()) as any).error.code).toBe('invalid_filter')
  })

  it('a node offline during 100 events catches up: none lost, none doubled', async () => {
    await c.stop()
    const before = (await eventsOn(a, 'lab')).length
    for (let i = 0; i < 10; i++) {
      const batch = Array.from({ length: 10 }, (_, k) => ({ namespace: 'lab', type: 'offline', payload: { n: i * 10 + k } }))
      const response = await a.api('POST', '/api/v1/events', { events: batch })
      expect(response.status).toBe(201)
    }
    // events of a namespace C does not see move the origin's seq on: C's chain must bridge them
    await a.api('POST', '/api/v1/events', { namespace: 'ops', type: 'unseen', payload: {} })
    await a.api('POST', '/api/v1/events', { namespace: 'lab', type: 'offline', payload: { n: 100 } })
    await c.start()
    const expected = before + 101
    const onC = await waitFor('C caught up', async () => {
      const events = await eventsOn(c, 'lab')
      return events.length >= expected ? events : undefined
    }, 30_000)
    expect(onC.length).toBe(expected)
    expect(new Set(onC.map((e) => e.id)).size).toBe(expected)
    expect(onC.filter((e) => e.type === 'offline').map((e) => e.payload.n).sort((x: number, y: number) => x - y)).toEqual(Array.from({ length: 101 }, (_, n) => n))
    expect(onC.some((e) => e.namespace !== 'lab')).toBe(false)
  })

  it('SSE resumes after Last-Event-ID', async () => {
    const all = await eventsOn(b, 'lab')
    const middle = all[Math.floor(all.length / 2)]
    const stream = await openSse(`${b.url}/api/v1/events/stream?namespace=lab`, b.token, { 'last-event-id': String(middle.localId) })
    try {
      await waitFor('replay', async () => stream.frames.filter((f) => f.event === 'event').length === all.length - all.indexOf(middle) - 1, 10_000)
      expect(stream.frames.filter((f) => f.event === 'event').map((f) => f.data.id)).toEqual(all.slice(all.indexOf(middle) + 1).map((e) => e.id))
    } finally {
      stream.close()
    }
  })

  it('kill -9 while ingesting: every acknowledged event is there after the restart', async () => {
    const acknowledged: string[] = []
    let stop = false
    const writer = (async () => {
      for (let n = 0; !stop; n++) {
        try {
          const response = await b.api('POST', '/api/v1/events', { events: Array.from({ length: 20 }, (_, k) => ({ namespace: 'ops', type: 'crash', payload: { n, k } })) })
          if (response.status === 201) acknowledged.push(...response.body.events.map((e: { id: string }) => e.id))
        } catch {
          return
        }
      }
    })()
    await waitFor('some events acknowledged', async () => acknowledged.length >= 200, 30_000, 20)
    await b.stop('SIGKILL')
    stop = true
    await writer
    await b.start()
    const stored = new Set((await eventsOn(b, 'ops')).map((e) => e.id))
    const missing = acknowledged.filter((id) => !stored.has(id))
    expect(missing).toEqual([])
  })

  it('a node that lost its database numbers on after what its peers hold, so nothing new is dropped as a duplicate', async () => {
    const mine = []
    for (let n = 0; n < 3; n++) mine.push((await c.api('POST', '/api/v1/events', { namespace: 'lab', type: 'mine', payload: { n } })).body)
    await waitFor('B has C\'s events', async () => (await eventsOn(b, 'lab')).filter((e) => e.origin === c.peerId).length === 3, 10_000)
    await c.stop()
    await rm(c.paths.database, { recursive: true, force: true })
    await c.start()
    await waitFor('C admitted again', async () => (await peerIdsOf(c)).length >= 2, 20_000)
    const next = await c.api('POST', '/api/v1/events', { namespace: 'lab', type: 'mine', payload: { n: 3 } })
    expect(next.status).toBe(201)
    expect(next.body.seq).toBe(Math.max(...mine.map((e) => e.seq)) + 1)
    await waitFor('B stores the new one', async () => (await eventsOn(b, 'lab')).some((e) => e.id === next.body.id), 10_000)
  })
})
