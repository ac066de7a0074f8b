import { writeFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatAmzDate } from '../../node/api/s3/sigv4.ts'
import { signRequest } from '../helpers/sigv4-client.ts'
import { createToken } from '../helpers/events.ts'
import { tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'
import { connectRealtime } from '../helpers/realtime.ts'
import { openSse } from '../helpers/sse.ts'

/** issue 10, points 1-4: what an attacker with a valid token tried, each answered as bad input */
describe('hostile input from token holders', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let node: TestNode
  let reader: string
  let writer: string

  const nested = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth)

  async function raw (method: string, path: string, body: string | undefined, token: string | undefined, headers: Record<string, string> = {}): Promise<{ status: number, body: any }> {
    const response = await fetch(node.url + path, {
      method,
      headers: { ...(token != null ? { authorization: `Bearer ${token}` } : {}), ...(body != null ? { 'content-type': 'application/json' } : {}), ...headers },
      body
    })
    const text = await response.text()
    return { status: response.status, body: text === '' ? null : JSON.parse(text) }
  }

  async function expectAlive (): Promise<void> {
    expect((await raw('GET', '/api/v1/health', undefined, undefined)).status).toBe(200)
  }

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    node = await mesh.addNode('n1', { roles: ['admin', 'member'], namespaces: ['lab'] })
    // a small rate-limit budget, so that exhausting it is quick
    await writeFile(node.paths.config, JSON.stringify({ http: { rateLimit: 200 } }))
    await node.start()
    reader = createToken(node, 'lab', 'reader')
    writer = createToken(node, 'lab', 'writer')
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('a realtime frame nested 3,000 levels deep is refused and the node stays up', async () => {
    const client = await connectRealtime(node.url, reader)
    try {
      await client.request({ type: 'join', channel: 'room:lab:x' })
      const frame = `{"type":"presence","channel":"room:lab:x","state":{"a":${nested(3000)}}}`
      const socket = new WebSocket(`${node.url.replace(/^http/, 'ws')}/realtime?token=${reader}`)
      await new Promise((resolve) => socket.addEventListener('open', resolve))
      const replies: any[] = []
      socket.addEventListener('message', (event) => replies.push(JSON.parse(String(event.data))))
      socket.send(frame)
      socket.send(`{"type":"broadcast","ref":"b1","channel":"room:lab:x","event":"e","payload":${nested(5000)}}`)
      const errors = await waitFor('two error replies', async () => replies.length >= 2 ? replies : undefined, 10_000)
      expect(errors[0]).toMatchObject({ type: 'error', error: { code: 'invalid_message', message: expect.stringMatching(/nested deeper than 64 levels/) } })
      // the broadcast had a ref: its refusal is a reply to it
      expect(errors[1]).toMatchObject({ type: 'reply', ref: 'b1', status: 'error', error: { code: 'invalid_message' } })
      socket.close()
      await expectAlive()
      // the first connection still works
      expect((await client.request({ type: 'heartbeat' })).status).toBe('ok')
    } finally {
      client.close()
    }
  })

  it('an SSE stream ends with token_expired when its token expires, and carries nothing after', async () => {
    const publish = async (n: number): Promise<void> => {
      const { status } = await node.api('POST', '/api/v1/events', { namespace: 'lab', type: 'tick', payload: { n } }, writer)
      expect(status).toBe(201)
    }
    await publish(0) // the database opens on first use, which can take longer than the token lives
    const shortLived = createToken(node, 'lab', 'reader', '4s')
    const stream = await openSse(`${node.url}/api/v1/events/stream?namespace=lab`, shortLived)
    await publish(1)
    await waitFor('event 1 on the stream', async () => stream.frames.find((f) => f.event === 'event' && f.data.payload.n === 1), 10_000)
    await stream.closed // the server ends the stream at expiry
    const last = stream.frames.at(-1)!
    expect(last.event).toBe('token_expired')
    expect(Number(last.data.lastEventId)).toBeGreaterThan(0)
    await publish(2)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(stream.frames.some((f) => f.event === 'event' && f.data.payload.n === 2)).toBe(false)
    // and a new stream with the expired token is refused
    await expect(openSse(`${node.url}/api/v1/events/stream?namespace=lab`, shortLived)).rejects.toMatchObject({ status: 401 })
  })

  it('strings PostgreSQL cannot store are 400s, not 500s', async () => {
    for (const body of ['{"namespace":"lab","type":"t","payload":{"a":"x\\u0000y"}}', '{"namespace":"lab","type":"t","payload":{"a":"\\ud800"}}', '{"namespace":"lab","type":"t","payload":{"\\u0000":1}}']) {
      const response = await raw('POST', '/api/v1/events', body, writer)
      expect(response.status, body).toBe(400)
      expect(response.body.error.code).toBe('invalid_request')
      expect(response.body.error.message).toMatch(/NUL|surrogate/)
    }
    const admin = node.token
    expect((await raw('POST', '/api/v1/storage/buckets', '{"name":"bkt","namespace":"lab"}', admin)).status).toBe(201)
    for (const path of ['/api/v1/storage/objects/bkt/a%00b?namespace=lab', '/api/v1/storage/buckets/bkt/objects?namespace=lab&prefix=a%00', '/api/v1/storage/buckets/b%00kt/objects?namespace=lab']) {
      const response = await raw('GET', path, undefined, admin)
      expect(response.status, path).toBe(400)
      expect(response.body.error.message).toMatch(/NUL/)
    }
    const put = await fetch(`${node.url}/api/v1/storage/objects/bkt/k%00?namespace=lab`, { method: 'PUT', headers: { authorization: `Bearer ${admin}` }, body: 'x' })
    expect(put.status).toBe(400)
    await expectAlive()
  })

  it('cursors beyond a bigint are 400s in REST, Last-Event-ID and a realtime join', async () => {
    const huge = '99999999999999999999999999'
    const list = await raw('GET', `/api/v1/events?namespace=lab&after=${huge}`, undefined, reader)
    expect(list.status).toBe(400)
    expect(list.body.error.message).toMatch(/local id is at most/)
    await expect(openSse(`${node.url}/api/v1/events/stream?namespace=lab`, reader, { 'last-event-id': huge })).rejects.toMatchObject({ status: 400 })
    const client = await connectRealtime(node.url, reader)
    try {
      const reply = await client.request({ type: 'join', channel: 'events:lab', config: { after: huge } })
      expect(reply).toMatchObject({ status: 'error', error: { code: 'invalid_message' } })
    } finally {
      client.close()
    }
    await expectAlive()
  })

  it('a REST body nested 2,000 levels deep is a 400', async () => {
    const response = await raw('POST', '/api/v1/events', `{"namespace":"lab","type":"t","payload":${nested(2000)}}`, writer)
    expect(response.status).toBe(400)
    expect(response.body.error).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/nested deeper/) })
    await expectAlive()
  })

  it('a malformed aws-chunked body to /s3 is refused and the node stays up', async () => {
    const { accessKeyId, secretAccessKey } = (await node.api('POST', '/api/v1/storage/credentials', { namespace: 'lab', role: 'reader' })).body
    const url = new URL(`${node.url}/s3/bkt/a.txt?partNumber=1&uploadId=nope`)
    const date = new Date()
    const headers: Record<string, string> = {
      host: url.host,
      'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
      'x-amz-date': formatAmzDate(date),
      'content-type': 'application/octet-stream'
    }
    headers.authorization = signRequest({ method: 'PUT', path: url.pathname, query: url.search.slice(1), headers, payloadHash: headers['x-amz-content-sha256'], accessKeyId, secret: secretAccessKey, region: 'us-east-1', date })
    const response = await fetch(url, { method: 'PUT', headers, body: 'not aws-chunked at all' })
    expect(response.status).toBeGreaterThanOrEqual(400)
    expect(response.status).toBeLessThan(500)
    expect(await response.text()).toMatch(/<Error><Code>/)
    await new Promise((resolve) => setTimeout(resolve, 200))
    await expectAlive()
  })

  it('what the router and the HTTP parser refuse is answered in the API\'s shape', async () => {
    const badUrl = await raw('GET', '/api/v1/content/%C0%80/providers', undefined, reader)
    expect(badUrl).toMatchObject({ status: 400, body: { error: { code: 'invalid_request' } } })
    const longParam = await raw('DELETE', `/api/v1/storage/objects/${'b'.repeat(2000)}/a.txt`, undefined, reader)
    expect(longParam).toMatchObject({ status: 414, body: { error: { code: 'uri_too_long' } } })
    const s3 = await fetch(`${node.url}/s3/%FF`)
    expect(s3.status).toBe(400)
    expect(await s3.text()).toMatch(/<Code>InvalidURI<\/Code>/)
    const headers = await fetch(`${node.url}/api/v1/node`, { headers: { 'x-big': 'x'.repeat(20_000) } })
    expect(headers.status).toBe(431)
    expect(await headers.json()).toMatchObject({ error: { code: 'headers_too_large' } })
    const plain = await raw('GET', '/realtime', undefined, reader)
    expect(plain).toMatchObject({ status: 426, body: { error: { code: 'upgrade_required' } } })
    await expectAlive()
  })

  it('an event whose payload is JSON null is stored and read back as null', async () => {
    const published = await raw('POST', '/api/v1/events', '{"namespace":"lab","type":"nothing","payload":null}', writer)
    expect(published.status).toBe(201)
    expect(published.body.payload).toBeNull()
    const listed = await raw('GET', `/api/v1/events?namespace=lab&after=${published.body.localId - 1}&limit=1`, undefined, reader)
    expect(listed.body.events[0]).toMatchObject({ id: published.body.id, payload: null })
  })

  it('an expired token on an open realtime connection gets nothing new: no joins, broadcasts or presence', async () => {
    const shortLived = createToken(node, 'lab', 'writer', '2s')
    const client = await connectRealtime(node.url, shortLived)
    try {
      await client.next('token_expired', (m) => m.type === 'token_expired', 10_000)
      for (const message of [{ type: 'join', channel: 'room:lab:late' }, { type: 'join', channel: 'events:lab' }]) {
        expect(await client.request(message)).toMatchObject({ status: 'error', error: { code: 'token_expired' } })
      }
      expect(await client.request({ type: 'broadcast', channel: 'room:lab:late', event: 'e', payload: {} })).toMatchObject({ status: 'error', error: { code: 'token_expired' } })
      // a fresh token brings the connection back
      expect((await client.request({ type: 'access_token', token: writer })).status).toBe('ok')
      expect((await client.request({ type: 'join', channel: 'room:lab:late' })).status).toBe('ok')
    } finally {
      client.close()
    }
  })

  it('a refused frame still answers its ref', async () => {
    const client = await connectRealtime(node.url, reader)
    try {
      client.send({ type: 'join', ref: 'j2', channel: 'events:lab\u0000' })
      const reply = await client.next('reply j2', (m) => m.ref === 'j2')
      expect(reply).toMatchObject({ type: 'reply', status: 'error', error: { code: 'invalid_message', message: expect.stringMatching(/NUL/) } })
    } finally {
      client.close()
    }
  })

  it('a replication job for a name or version no model can have is a 400, not a 500', async () => {
    for (const body of [{ name: 'X_Y', version: '1.0.0', namespace: 'lab', replicas: 1 }, { name: 'ok', version: 'dr|oe', namespace: 'lab', replicas: 1 }]) {
      const response = await node.api('POST', '/api/v1/replication', body)
      expect(response.status, JSON.stringify(body)).toBe(400)
      expect(response.body.error.code).toBe('invalid_request')
    }
  })

  it('a JSON body whose bytes are not UTF-8 is refused, not stored as replacement characters', async () => {
    const body = Buffer.concat([Buffer.from('{"namespace":"lab","type":"t","payload":{"a":"'), Buffer.from([0xed, 0xa0, 0x80, 0xff]), Buffer.from('"}}')])
    const response = await fetch(`${node.url}/api/v1/events`, { method: 'POST', headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' }, body })
    expect(response.status).toBe(400)
    expect(((await response.json()) as any).error).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/not UTF-8/) })
  })

  it('anonymous floods leave health and token holders their own budgets', async () => {
    // far past the budget of 200 per minute from this address, without a token
    const anonymous = await Promise.all(Array.from({ length: 260 }, async () => (await raw('GET', '/api/v1/node', undefined, undefined)).status))
    expect(anonymous.filter((status) => status === 429).length).toBeGreaterThan(0)
    await expectAlive()
    expect((await raw('GET', '/api/v1/node', undefined, node.token)).status).toBe(200)
    expect((await raw('GET', '/api/v1/events?namespace=lab&limit=1', undefined, reader)).status).toBe(200)
    // a token's own budget still runs out: it is a budget, not an exemption
    const flood = await Promise.all(Array.from({ length: 230 }, async () => (await raw('GET', '/api/v1/events?namespace=lab&limit=1', undefined, writer)).status))
    expect(flood.filter((status) => status === 429).length).toBeGreaterThan(0)
    expect((await raw('GET', '/api/v1/events?namespace=lab&limit=1', undefined, reader)).status).toBe(200)
  })
})
