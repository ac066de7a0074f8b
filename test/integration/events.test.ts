import { rm } from 'node:fs/promises'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NodeConfig } from '../../node/config/index.ts'
import { createNode } from '../../node/create-node.ts'
import { eventsTopic } from '../../protocols/ids.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'
import { createToken, listEvents } from '../helpers/events.ts'
import { connectRealtime } from '../helpers/realtime.ts'
import { openSse } from '../helpers/sse.ts'
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'

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

  it('an event published on A reaches a filtered SSE subscriber on C, and only the namespace\'s nodes store it', { timeout: 120_000 }, async () => {
    const writerA = createToken(a, 'lab', 'writer')
    const readerC = createToken(c, 'lab', 'reader')
    const stream = await openSse(`${c.url}/api/v1/events/stream?namespace=lab&type=reading&filter=${encodeURIComponent('celsius=gt.20')}`, readerC)
    try {
      // the first gossip needs the topic mesh: publish until C has one
      const cold = await a.api('POST', '/api/v1/events', { namespace: 'lab', type: 'reading', payload: { celsius: 10 } }, writerA)
      expect(cold.status, JSON.stringify(cold.body)).toBe(201)
      expect(cold.body).toMatchObject({ namespace: 'lab', type: 'reading', origin: a.peerId, seq: 1, prevSeq: 0 })
      await waitFor('first event on C', async () => (await listEvents(c, 'lab', readerC)).length === 1, 60_000)
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
    // B's database may still be opening (the first one on a fresh machine takes seconds)
    await waitFor('events on B', async () => (await listEvents(b, 'lab')).length === 3, 40_000)
    expect(await listEvents(outsider, 'lab')).toEqual([])
  })

  it('a namespace token never reads or writes another namespace', async () => {
    const labWriter = createToken(a, 'lab', 'writer')
    const opsReader = createToken(a, 'ops', 'reader')
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
    const before = (await listEvents(a, 'lab')).length
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
      const events = await listEvents(c, 'lab')
      return events.length >= expected ? events : undefined
    }, 30_000)
    expect(onC.length).toBe(expected)
    expect(new Set(onC.map((e) => e.id)).size).toBe(expected)
    expect(onC.filter((e) => e.type === 'offline').map((e) => e.payload.n).sort((x: number, y: number) => x - y)).toEqual(Array.from({ length: 101 }, (_, n) => n))
    expect(onC.some((e) => e.namespace !== 'lab')).toBe(false)
  })

  it('SSE resumes after Last-Event-ID', async () => {
    const all = await listEvents(b, 'lab')
    const middle = all[Math.floor(all.length / 2)]
    const stream = await openSse(`${b.url}/api/v1/events/stream?namespace=lab`, b.token, { 'last-event-id': String(middle.localId) })
    try {
      await waitFor('replay', async () => stream.frames.filter((f) => f.event === 'event').length === all.length - all.indexOf(middle) - 1, 10_000)
      expect(stream.frames.filter((f) => f.event === 'event').map((f) => f.data.id)).toEqual(all.slice(all.indexOf(middle) + 1).map((e) => e.id))
    } finally {
      stream.close()
    }
  })

  it('kill -9 while ingesting: every acknowledged event is there after the restart, and streams resume across it', async () => {
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
    const all = await listEvents(b, 'ops')
    const stored = new Set(all.map((e) => e.id))
    const missing = acknowledged.filter((id) => !stored.has(id))
    expect(missing).toEqual([])
    // a client that saw part of the stream before the crash resumes from its last event id
    const seen = all[Math.floor(all.length / 2)]
    const stream = await openSse(`${b.url}/api/v1/events/stream?namespace=ops`, b.token, { 'last-event-id': String(seen.localId) })
    try {
      const rest = all.slice(all.indexOf(seen) + 1).map((e) => e.id)
      await waitFor('replay after the restart', async () => stream.frames.filter((f) => f.event === 'event').length >= rest.length, 15_000)
      expect(stream.frames.filter((f) => f.event === 'event').map((f) => f.data.id).slice(0, rest.length)).toEqual(rest)
    } finally {
      stream.close()
    }
  })

  it('a node that lost its database numbers on after what its peers hold, so nothing new is dropped as a duplicate', async () => {
    const mine: any[] = []
    for (let n = 0; n < 3; n++) mine.push((await c.api('POST', '/api/v1/events', { namespace: 'lab', type: 'mine', payload: { n } })).body)
    await waitFor('B has C\'s events', async () => (await listEvents(b, 'lab')).filter((e) => e.origin === c.peerId).length === 3, 10_000)
    await c.stop()
    await rm(c.paths.database, { recursive: true, force: true })
    await c.start()
    await waitFor('C admitted again', async () => (await peerIdsOf(c)).length >= 2, 20_000)
    const next = await c.api('POST', '/api/v1/events', { namespace: 'lab', type: 'mine', payload: { n: 3 } })
    expect(next.status).toBe(201)
    expect(next.body.seq).toBe(Math.max(...mine.map((e) => e.seq)) + 1)
    await waitFor('B stores the new one', async () => (await listEvents(b, 'lab')).some((e) => e.id === next.body.id), 10_000)
  })

  it('realtime: a WebSocket client on C gets A\'s events filtered, and cannot join another namespace', async () => {
    const client = await connectRealtime(c.url, createToken(c, 'lab', 'reader'))
    try {
      const badFilter = await client.request({ type: 'join', channel: 'events:lab', config: { filter: ['level=like.x'] } })
      expect(badFilter).toMatchObject({ status: 'error', error: { code: 'invalid_filter' } })
      expect(await client.request({ type: 'join', channel: 'events:lab', config: { filter: ['level=in.(warn,error)'] } })).toMatchObject({ status: 'ok' })
      const refused = await client.request({ type: 'join', channel: 'events:ops' })
      expect(refused).toMatchObject({ status: 'error', error: { code: 'forbidden' } })
      expect(await client.request({ type: 'nonsense' })).toMatchObject({ status: 'error', error: { code: 'invalid_message' } })
      const writer = createToken(a, 'lab', 'writer')
      const sent: any[] = []
      for (const level of ['info', 'warn', 'debug', 'error']) sent.push((await a.api('POST', '/api/v1/events', { namespace: 'lab', type: 'log', payload: { level } }, writer)).body)
      await client.next('error event', (m) => m.type === 'event' && m.event.payload.level === 'error')
      expect(client.messages.filter((m) => m.type === 'event').map((m) => m.event.id)).toEqual([sent[1].id, sent[3].id])
      expect((await client.request({ type: 'heartbeat' })).status).toBe('ok')
      // resume: a second connection replays from the first event's cursor
      const resumed = await connectRealtime(c.url, createToken(c, 'lab', 'reader'))
      const first = client.messages.find((m) => m.type === 'event').event
      expect((await resumed.request({ type: 'join', channel: 'events:lab', config: { after: first.id, filter: ['level=in.(warn,error)'] } })).status).toBe('ok')
      await resumed.next('replayed error event', (m) => m.type === 'event' && m.event.id === sent[3].id)
      expect(resumed.messages.filter((m) => m.type === 'event').map((m) => m.event.id)).toEqual([sent[3].id])
      resumed.close()
    } finally {
      client.close()
    }
  })

  it('realtime: broadcast and presence reach clients of the same room on other nodes', async () => {
    const one = await connectRealtime(b.url, createToken(b, 'lab', 'writer'))
    const two = await connectRealtime(c.url, createToken(c, 'lab', 'writer'))
    try {
      expect((await one.request({ type: 'join', channel: 'room:lab:chat' })).status).toBe('ok')
      expect((await two.request({ type: 'join', channel: 'room:lab:chat' })).status).toBe('ok')
      expect((await one.request({ type: 'presence', channel: 'room:lab:chat', key: 'ada', state: { typing: false } })).status).toBe('ok')
      const joined = await two.next('presence join', (m) => m.type === 'presence_diff' && m.joins.ada != null, 15_000)
      expect(joined.joins.ada).toEqual([{ typing: false }])
      // gossip needs the room topic's mesh: send until the other node delivers
      await waitFor('broadcast across nodes', async () => {
        one.send({ type: 'broadcast', channel: 'room:lab:chat', event: 'msg', payload: { text: 'hi' } })
        return two.messages.some((m) => m.type === 'broadcast' && m.payload.text === 'hi')
      }, 15_000, 300)
      expect(one.messages.some((m) => m.type === 'broadcast')).toBe(false)
      const readerOnly = await connectRealtime(c.url, createToken(c, 'lab', 'reader'))
      await readerOnly.request({ type: 'join', channel: 'room:lab:chat' })
      expect(await readerOnly.request({ type: 'broadcast', channel: 'room:lab:chat', event: 'x', payload: {} })).toMatchObject({ status: 'error', error: { code: 'forbidden' } })
      readerOnly.close()
      one.close()
      await two.next('presence leave', (m) => m.type === 'presence_diff' && m.leaves.ada != null, 15_000)
    } finally {
      one.close()
      two.close()
    }
  })

  it('realtime: a token can be refreshed; an expired one ends the channels', async () => {
    // every other token first: a CLI run can take a second or two on a busy machine
    const fresh = createToken(c, 'lab', 'reader')
    const otherNamespace = createToken(c, 'other', 'reader')
    const short = createToken(c, 'lab', 'reader', '5s')
    const refreshed = await connectRealtime(c.url, short)
    const expiring = await connectRealtime(c.url, short)
    try {
      await refreshed.request({ type: 'join', channel: 'events:lab' })
      await expiring.request({ type: 'join', channel: 'events:lab' })
      expect(await refreshed.request({ type: 'access_token', token: 'bkgt1.forged.token' })).toMatchObject({ status: 'error', error: { code: 'unauthorized' } })
      expect((await refreshed.request({ type: 'access_token', token: fresh })).status).toBe('ok')
      await expiring.next('token_expired', (m) => m.type === 'token_expired', 15_000)
      expect(expiring.messages.find((m) => m.type === 'channel_closed')).toMatchObject({ channel: 'events:lab', reason: 'token expired' })
      expect(refreshed.messages.some((m) => m.type === 'token_expired')).toBe(false)
      // a token for another namespace ends the channels it does not allow
      expect((await refreshed.request({ type: 'access_token', token: otherNamespace })).status).toBe('ok')
      await refreshed.next('channel closed', (m) => m.type === 'channel_closed' && m.channel === 'events:lab')
    } finally {
      refreshed.close()
      expiring.close()
    }
    // without a token the upgrade is refused with a plain HTTP 401
    const status = await new Promise<number>((resolve, reject) => {
      const request = httpRequest(`${c.url}/realtime`, { headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } })
      request.on('response', (response) => { response.resume(); resolve(response.statusCode ?? 0) })
      request.on('upgrade', () => reject(new Error('upgraded without a token')))
      request.on('error', reject)
      request.end()
    })
    expect(status).toBe(401)
  })

  it('realtime: a client that stops reading is told it lagged and dropped, not buffered without bound', { timeout: 240_000 }, async () => {
    const url = new URL(c.url)
    const token = createToken(c, 'lab', 'writer')
    const socket = connect(Number(url.port), url.hostname)
    await new Promise((resolve) => socket.once('connect', resolve))
    const received: Buffer[] = []
    let receivedBytes = 0
    let sawLagged = false
    socket.on('data', (chunk: Buffer) => {
      // the marker may straddle two chunks: look at the tail of the previous one too
      const tail = received.at(-1)?.subarray(-32) ?? Buffer.alloc(0)
      if (Buffer.concat([tail, chunk]).includes('"type":"lagged"')) sawLagged = true
      received.push(chunk)
      receivedBytes += chunk.length
    })
    socket.write(`GET /realtime?token=${token} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`)
    await waitFor('upgrade', async () => Buffer.concat(received).includes('101 Switching Protocols'))
    // masked client text frames: join the room, then be present in it
    const frame = (message: object): Buffer => {
      const payload = Buffer.from(JSON.stringify(message))
      const mask = Buffer.from([1, 2, 3, 4])
      return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]))])
    }
    socket.write(frame({ type: 'join', ref: 'j', channel: 'room:lab:firehose' }))
    await waitFor('join reply', async () => Buffer.concat(received).includes('"ref":"j"'))
    socket.write(frame({ type: 'presence', ref: 'p', channel: 'room:lab:firehose', key: 'slow', state: {} }))
    await waitFor('presence reply', async () => Buffer.concat(received).includes('"ref":"p"'))
    socket.pause()
    // another client of the same node floods the room until the node drops the slow one, which
    // it sees as the slow client leaving the room's presence
    const sender = await connectRealtime(c.url, token)
    await sender.request({ type: 'join', channel: 'room:lab:firehose' })
    const big = 'x'.repeat(60_000)
    let sent = 0
    const dropped = (): boolean => sender.messages.some((m) => m.type === 'presence_diff' && m.leaves?.slow != null)
    while (!dropped() && sent < 3000) {
      for (let i = 0; i < 100; i++) sender.send({ type: 'broadcast', channel: 'room:lab:firehose', event: 'bulk', payload: { i: sent++, big } })
      // stay under the per-client broadcast rate limit
      await sender.request({ type: 'heartbeat' })
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    expect(sender.messages.some((m) => m.error?.code === 'rate_limited')).toBe(false)
    expect(dropped()).toBe(true)
    sender.close()
    socket.resume()
    const closed = new Promise((resolve) => socket.once('close', resolve))
    await waitFor('lagged message', async () => sawLagged, 60_000)
    await closed
    // the slow client got only what its 4 MiB bound and the kernel's socket buffers held, not
    // everything that was sent to the room
    expect(receivedBytes).toBeLessThan(sent * big.length)
    expect(receivedBytes).toBeLessThan(48 * 1024 * 1024)
  })
})
