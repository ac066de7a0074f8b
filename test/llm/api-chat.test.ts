/**
 * `POST /api/v1/llm/chat` on the node's API server with a fake LLM service: JSON answers, SSE
 * streams, refusals before and failures after the head, backpressure (a client that does not
 * read stops generation after a bounded number of pieces) and disconnects (the service's signal
 * fires and its iterator is returned, within one piece).
 */
import http from 'node:http'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { BkgError } from '../../lib/bkg-error.ts'
import { FAKE_MODEL, FAKE_PEER, FAKE_SHA, settled, startFakeApi, until, type FakeApi, resetFake } from './api-fake.ts'

let fake: FakeApi
beforeAll(async () => { fake = await startFakeApi() })
afterAll(async () => { await fake.close() })
beforeEach(() => {
  resetFake(fake)
})

const user = [{ role: 'user', content: 'hello' }]

async function post (path: string, body: unknown, headers: Record<string, string> = {}, token = fake.token): Promise<Response> {
  return await fetch(`${fake.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
}

interface Frame { event: string, data: any }

function parseSse (text: string): Frame[] {
  return text.split('\n\n').filter((block) => block.trim() !== '').map((block) => ({
    event: /^event: (.*)$/m.exec(block)?.[1] ?? 'message',
    data: JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? 'null')
  }))
}

/** A raw HTTP request whose response the test reads (or does not) at its own pace. */
async function openRaw (body: unknown): Promise<{ request: http.ClientRequest, response: http.IncomingMessage }> {
  const target = new URL(`${fake.url}/api/v1/llm/chat`)
  return await new Promise((resolve, reject) => {
    const request = http.request(target, { method: 'POST', agent: false, headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json', accept: 'text/event-stream' } }, (response) => resolve({ request, response }))
    request.on('error', reject)
    request.end(JSON.stringify(body))
  })
}

describe('POST /api/v1/llm/chat, JSON', () => {
  it('answers the result with its provenance, in the header too; the service gets the request in its own shape', async () => {
    const response = await post('/api/v1/llm/chat', {
      model: FAKE_MODEL,
      messages: [{ role: 'developer', content: 'be brief' }, { role: 'user', content: [{ type: 'text', text: 'hel' }, { type: 'text', text: 'lo' }] }],
      temperature: 0,
      top_p: 0.9,
      top_k: 40,
      min_p: 0.05,
      seed: 7,
      stop: 'END',
      max_tokens: 3,
      placement: 'local'
    })
    expect(response.status).toBe(200)
    expect(response.headers.get('x-bkg-served-by')).toBe(FAKE_PEER)
    const result = await (response.json() as Promise<any>)
    expect(result).toMatchObject({
      text: 't0 t1 t2 ',
      tool_calls: [],
      finish_reason: 'length',
      usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 },
      model: FAKE_MODEL,
      model_sha256: FAKE_SHA,
      backend: 'fake@1 (cpu)',
      served_by: FAKE_PEER,
      via_peer: false,
      deterministic: true,
      failed_peers: []
    })
    expect(Object.keys(result.timings).sort()).toEqual(['first_token_ms', 'queued_ms', 'total_ms'])
    expect(fake.llm.calls[0].request).toEqual({
      model: FAKE_MODEL,
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }],
      temperature: 0,
      topP: 0.9,
      topK: 40,
      minP: 0.05,
      seed: 7,
      stop: ['END'],
      maxTokens: 3,
      placement: 'local'
    })
    expect(fake.llm.calls[0].options.principal).toMatch(/.+/)
  })

  it('maps response_format, tools, tool_choice and tool turns', async () => {
    const tools = [{ type: 'function', function: { name: 'get_time', description: 'now', parameters: { type: 'object', properties: { zone: { type: 'string' } } } } }]
    const response = await post('/api/v1/llm/chat', {
      messages: [
        { role: 'user', content: 'time?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_time', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '12:00' }
      ],
      tools,
      tool_choice: { type: 'function', function: { name: 'get_time' } },
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } }
    })
    expect(response.status).toBe(200)
    const result = await (response.json() as Promise<any>)
    expect(result.finish_reason).toBe('tool_calls')
    expect(result.tool_calls).toEqual([{ id: 'call_' + '0'.repeat(24), type: 'function', function: { name: 'get_time', arguments: '{"zone":"UTC"}' } }])
    const request = fake.llm.calls[0].request
    expect(request.messages).toEqual([
      { role: 'user', content: 'time?' },
      { role: 'assistant', content: '', toolCalls: [{ id: 'call_1', name: 'get_time', arguments: '{}' }] },
      { role: 'tool', content: '12:00', toolCallId: 'call_1' }
    ])
    expect(request.tools).toEqual([{ name: 'get_time', description: 'now', parameters: tools[0].function.parameters }])
    expect(request.toolChoice).toEqual({ name: 'get_time' })
    expect(request.responseFormat).toEqual({ type: 'json_schema', name: 'x', schema: { type: 'object' } })
  })

  it('refuses what it cannot take, in the API\'s error shape', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ messages: user, frequency: 1 }, /unknown field "frequency"/],
      [{ messages: [] }, /body.messages: at least 1 items/],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, /only text parts/],
      [{ messages: [{ role: 'tool', content: 'x' }] }, /tool_call_id: required/],
      [{ messages: user, tool_choice: 'required' }, /"required" needs tools/],
      [{ messages: user, temperature: 3 }, /temperature: at most 2/]
    ]
    for (const [body, message] of cases) {
      const response = await post('/api/v1/llm/chat', body)
      expect(response.status, JSON.stringify(body)).toBe(400)
      const error = (await (response.json() as Promise<any>)).error
      expect(error.code).toBe('invalid_request')
      expect(error.message).toMatch(message)
    }
    expect((await post('/api/v1/llm/chat', { messages: user }, {}, 'nope')).status).toBe(401)
    expect(fake.llm.calls).toHaveLength(0)
  })

  it('a busy node answers 429 with Retry-After; an unknown model 404', async () => {
    fake.llm.script.busy = 3
    const busy = await post('/api/v1/llm/chat', { messages: user })
    expect(busy.status).toBe(429)
    expect(busy.headers.get('retry-after')).toBe('3')
    expect((await (busy.json() as Promise<any>)).error.code).toBe('llm_busy')
    fake.llm.script.busy = null
    const unknown = await post('/api/v1/llm/chat', { model: 'nope@1.0.0', messages: user })
    expect(unknown.status).toBe(404)
    expect((await (unknown.json() as Promise<any>)).error).toEqual({ code: 'model_not_found', message: 'no model nope@1.0.0 here or on a peer' })
  })

  it('a client that disconnects before the result cancels the chat', async () => {
    fake.llm.script.pieces = Infinity
    const request = http.request(new URL(`${fake.url}/api/v1/llm/chat`), { method: 'POST', agent: false, headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' } })
    request.on('error', () => {})
    request.end(JSON.stringify({ messages: user }))
    await until(() => fake.llm.calls[0]?.produced > 3, 'pieces produced')
    request.destroy()
    await until(() => fake.llm.calls[0].returned, 'the chat iterator returned')
    const call = fake.llm.calls[0]
    expect(call.abortedAt).not.toBeNull()
    expect(call.produced - call.abortedAt!).toBeLessThanOrEqual(1)
  })
})

describe('POST /api/v1/llm/chat, SSE', () => {
  it('streams start, token and done events; the head names the serving node', async () => {
    for (const [body, headers] of [[{ messages: user, stream: true }, {}], [{ messages: user }, { accept: 'text/event-stream' }]] as const) {
      fake.llm.calls.length = 0
      const response = await post('/api/v1/llm/chat', body, headers)
      expect(response.status).toBe(200)
      expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/)
      expect(response.headers.get('x-bkg-served-by')).toBe(FAKE_PEER)
      const frames = parseSse(await response.text())
      expect(frames.map((frame) => frame.event)).toEqual(['start', 'token', 'token', 'token', 'token', 'token', 'done'])
      expect(frames[0].data).toEqual({ model: FAKE_MODEL, model_sha256: FAKE_SHA, backend: 'fake@1 (cpu)', served_by: FAKE_PEER, via_peer: false, deterministic: false })
      expect(frames[1].data).toEqual({ text: 't0 ', tokens: 1 })
      expect(frames[6].data).toMatchObject({ text: 't0 t1 t2 t3 t4 ', finish_reason: 'stop', served_by: FAKE_PEER })
      expect(fake.llm.calls[0].finished).toBe(true)
    }
  })

  it('a refusal before the first event is a JSON error with its status (429 with Retry-After)', async () => {
    fake.llm.script.busy = 2
    const response = await post('/api/v1/llm/chat', { messages: user, stream: true })
    expect(response.status).toBe(429)
    expect(response.headers.get('retry-after')).toBe('2')
    expect(response.headers.get('content-type')).toMatch(/^application\/json/)
    expect((await (response.json() as Promise<any>)).error.code).toBe('llm_busy')
  })

  it('a failure after the head is an error event', async () => {
    fake.llm.script.failAfter = 2
    const response = await post('/api/v1/llm/chat', { messages: user, stream: true })
    expect(response.status).toBe(200)
    const frames = parseSse(await response.text())
    expect(frames.map((frame) => frame.event)).toEqual(['start', 'token', 'token', 'error'])
    expect(frames[3].data).toEqual({ error: { code: 'llm_failed', message: 'the backend failed mid-stream' } })
  })

  it('an internal failure after the head is an error event without details', async () => {
    fake.llm.script.refuse = null
    fake.llm.script.failAfter = null
    const original = fake.llm.script.piece
    fake.llm.script.piece = (index) => { if (index === 1) throw new Error('secret detail'); return original(index) }
    const response = await post('/api/v1/llm/chat', { messages: user, stream: true })
    const frames = parseSse(await response.text())
    expect(frames.at(-1)).toEqual({ event: 'error', data: { error: { code: 'internal', message: 'the chat failed' } } })
  })

  it('backpressure: a client that reads nothing stops generation after a bounded number of pieces; reading resumes it', async () => {
    fake.llm.script.pieces = 20_000
    fake.llm.script.piece = () => 'x'.repeat(64 * 1024)
    const { response } = await openRaw({ messages: user })
    expect(response.statusCode).toBe(200)
    // the response is never read: socket buffers fill, the server's write returns false, and it
    // waits for 'drain' instead of pulling the next piece
    const stalled = await settled(() => fake.llm.calls[0].produced)
    // what the kernel's socket buffers and Node's stream buffers hold, in 64 KiB pieces
    expect(stalled).toBeLessThan(300)
    expect(fake.llm.calls[0].finished).toBe(false)
    let received = 0
    response.on('data', (chunk: Buffer) => { received += chunk.length })
    await until(() => fake.llm.calls[0].produced > stalled + 100, 'generation to resume once the client reads')
    response.destroy()
    await until(() => fake.llm.calls[0].returned, 'the chat to end')
    expect(fake.llm.calls[0].abortedAt).not.toBeNull()
    expect(received).toBeGreaterThan(0)
  })

  it('a client that disconnects mid-stream aborts the chat within one piece', async () => {
    fake.llm.script.pieces = Infinity
    const { response } = await openRaw({ messages: user })
    let frames = 0
    response.on('data', (chunk: Buffer) => { frames += chunk.toString().split('\n\n').length - 1 })
    await until(() => frames > 10, 'a few frames')
    response.destroy()
    await until(() => fake.llm.calls[0].returned, 'the chat iterator to be returned')
    const call = fake.llm.calls[0]
    expect(call.abortedAt).not.toBeNull()
    expect(call.produced - call.abortedAt!).toBeLessThanOrEqual(1)
    expect(call.finished).toBe(false)
    expect(call.options.signal?.reason).toBeInstanceOf(BkgError)
  })
})
