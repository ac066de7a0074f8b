/**
 * The official `openai` npm client (v6), unchanged, against `/v1` with a BKG token as its API key
 * and a fake LLM service: chat (plain, streamed with usage, json_schema, a tool call round trip),
 * embeddings (the client's default base64, and float), models, responses (plain and streamed),
 * errors in OpenAI's shape, 429 with Retry-After, refused parameters.
 */
import OpenAI from 'openai'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FAKE_MODEL, FAKE_PEER, fakeVector, startFakeApi, type FakeApi, resetFake } from './api-fake.ts'

let fake: FakeApi
let client: OpenAI
beforeAll(async () => {
  fake = await startFakeApi()
  client = new OpenAI({ apiKey: fake.token, baseURL: `${fake.url}/v1`, maxRetries: 0 })
})
afterAll(async () => { await fake.close() })
beforeEach(() => {
  resetFake(fake)
})

describe('chat completions', () => {
  it('plain: a chat.completion with usage and served_by; the header names the node', async () => {
    const { data: completion, response } = await client.chat.completions.create({
      model: FAKE_MODEL,
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }],
      max_tokens: 3,
      temperature: 0,
      seed: 1,
      stop: ['END']
    }).withResponse()
    expect(response.headers.get('x-bkg-served-by')).toBe(FAKE_PEER)
    expect(completion).toMatchObject({
      object: 'chat.completion',
      model: FAKE_MODEL,
      choices: [{ index: 0, message: { role: 'assistant', content: 't0 t1 t2 ' }, finish_reason: 'length', logprobs: null }],
      usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 },
      served_by: FAKE_PEER
    })
    expect(completion.id).toMatch(/^chatcmpl-/)
    expect(typeof completion.created).toBe('number')
    expect(fake.llm.calls[0].request).toMatchObject({ model: FAKE_MODEL, maxTokens: 3, temperature: 0, seed: 1, stop: ['END'] })
  })

  it('streamed: chunks with the role first, text deltas, the finish reason, a usage chunk, [DONE]', async () => {
    const stream = await client.chat.completions.create({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } })
    const chunks: OpenAI.ChatCompletionChunk[] = []
    for await (const chunk of stream) chunks.push(chunk)
    expect(chunks.every((chunk) => chunk.object === 'chat.completion.chunk' && chunk.id === chunks[0].id)).toBe(true)
    expect(chunks[0].choices[0].delta.role).toBe('assistant')
    expect(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('')).toBe('t0 t1 t2 t3 t4 ')
    const last = chunks.at(-1)!
    expect(last.choices).toEqual([])
    expect(last.usage).toEqual({ prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 })
    expect(chunks.at(-2)!.choices[0].finish_reason).toBe('stop')
    expect((chunks[0] as unknown as { served_by: string }).served_by).toBe(FAKE_PEER)
    // the SDK's own accumulator agrees
    const runner = client.chat.completions.stream({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'hi' }] })
    const final = await runner.finalChatCompletion()
    expect(final.choices[0].message.content).toBe('t0 t1 t2 t3 t4 ')
  })

  it('response_format json_schema: the content parses', async () => {
    const completion = await client.chat.completions.create({
      model: FAKE_MODEL,
      messages: [{ role: 'user', content: 'give me json' }],
      response_format: { type: 'json_schema', json_schema: { name: 'thing', schema: { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, n: { type: 'integer' } }, required: ['name', 'n'] } } }
    })
    expect(JSON.parse(completion.choices[0].message.content!)).toEqual({ name: 'ab', n: 2 })
    expect(fake.llm.calls[0].request.responseFormat).toEqual({ type: 'json_schema', name: 'thing', schema: expect.objectContaining({ type: 'object' }) })
  })

  it('tools: a tool call comes back, its result goes in as a tool message (plain and streamed)', async () => {
    const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_time', description: 'the time', parameters: { type: 'object', properties: { zone: { type: 'string' } } } } }]
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'what time is it?' }]
    const first = await client.chat.completions.create({ model: FAKE_MODEL, messages, tools, tool_choice: 'auto' })
    const choice = first.choices[0]
    expect(choice.finish_reason).toBe('tool_calls')
    expect(choice.message.content).toBeNull()
    expect(choice.message.tool_calls).toEqual([{ id: 'call_' + '0'.repeat(24), type: 'function', function: { name: 'get_time', arguments: '{"zone":"UTC"}' } }])
    messages.push(choice.message, { role: 'tool', tool_call_id: choice.message.tool_calls![0].id, content: '12:00' })
    await client.chat.completions.create({ model: FAKE_MODEL, messages, tools, tool_choice: 'none' })
    expect(fake.llm.calls[1].request.messages.slice(1)).toEqual([
      { role: 'assistant', content: '', toolCalls: [{ id: 'call_' + '0'.repeat(24), name: 'get_time', arguments: '{"zone":"UTC"}' }] },
      { role: 'tool', content: '12:00', toolCallId: 'call_' + '0'.repeat(24) }
    ])
    expect(fake.llm.calls[1].request.toolChoice).toBe('none')

    // streamed: the call's JSON is never sent as content; the SDK assembles the tool call
    const runner = client.chat.completions.stream({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'time?' }], tools })
    const contents: string[] = []
    runner.on('content', (delta) => contents.push(delta))
    const final = await runner.finalChatCompletion()
    expect(contents.join('')).toBe('')
    expect(final.choices[0].finish_reason).toBe('tool_calls')
    expect(final.choices[0].message.tool_calls?.[0]).toMatchObject({ id: 'call_' + '0'.repeat(24), type: 'function', function: { name: 'get_time', arguments: '{"zone":"UTC"}' } })
  })

  it('refuses parameters whose meaning would be lost, with OpenAI\'s error shape', async () => {
    const refused = client.chat.completions.create({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'x' }], n: 2 })
    await expect(refused).rejects.toBeInstanceOf(OpenAI.BadRequestError)
    await expect(refused).rejects.toMatchObject({ status: 400, code: 'unsupported_parameter', type: 'invalid_request_error', message: expect.stringMatching(/^400 n: only one choice/) })
    await expect(client.chat.completions.create({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'x' }], logprobs: true })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/logprobs/) })
    // fields that change nothing are ignored
    const ok = await client.chat.completions.create({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'x' }], user: 'u1', store: false, metadata: { a: 'b' }, n: 1, frequency_penalty: 0, parallel_tool_calls: false })
    expect(ok.choices[0].message.content).toBe('t0 t1 t2 t3 t4 ')
    const raw = await fetch(`${fake.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: FAKE_MODEL, messages: [] }) })
    expect(await raw.json()).toEqual({ error: { message: expect.stringMatching(/messages/), type: 'invalid_request_error', param: null, code: 'invalid_request' } })
  })

  it('a wrong key is an AuthenticationError; an unknown model NotFoundError', async () => {
    const stranger = new OpenAI({ apiKey: 'wrong', baseURL: `${fake.url}/v1`, maxRetries: 0 })
    await expect(stranger.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError)
    await expect(client.chat.completions.create({ model: 'nope@9.9.9', messages: [{ role: 'user', content: 'x' }] })).rejects.toBeInstanceOf(OpenAI.NotFoundError)
  })

  it('a busy node: RateLimitError carrying Retry-After, streamed or not', async () => {
    fake.llm.script.busy = 7
    for (const stream of [false, true]) {
      const error = await client.chat.completions.create({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'x' }], stream }).then(() => null, (err: unknown) => err)
      expect(error).toBeInstanceOf(OpenAI.RateLimitError)
      expect((error as InstanceType<typeof OpenAI.RateLimitError>).headers.get('retry-after')).toBe('7')
      expect(error).toMatchObject({ code: 'llm_busy', type: 'rate_limit_error' })
    }
  })

  it('a failure mid-stream is thrown by the client\'s iterator', async () => {
    fake.llm.script.failAfter = 2
    const stream = await client.chat.completions.create({ model: FAKE_MODEL, messages: [{ role: 'user', content: 'x' }], stream: true })
    const seen: string[] = []
    await expect((async () => { for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? '') })()).rejects.toThrow(/the backend failed mid-stream/)
    expect(seen.join('')).toBe('t0 t1 ')
  })
})

describe('embeddings', () => {
  it('the client\'s default (base64, float32 little-endian) decodes to the vectors; float too', async () => {
    const { data: decoded, response } = await client.embeddings.create({ model: FAKE_MODEL, input: ['hello', 'world'] }).withResponse()
    expect(response.headers.get('x-bkg-served-by')).toBe(FAKE_PEER)
    expect(decoded.data.map((entry) => entry.embedding)).toEqual([fakeVector('hello'), fakeVector('world')])
    expect(decoded).toMatchObject({ object: 'list', model: FAKE_MODEL, usage: { prompt_tokens: 10, total_tokens: 10 }, served_by: FAKE_PEER })
    const float = await client.embeddings.create({ model: FAKE_MODEL, input: 'hello', encoding_format: 'float' })
    expect(float.data).toEqual([{ object: 'embedding', index: 0, embedding: fakeVector('hello') }])
    const base64 = await client.embeddings.create({ model: FAKE_MODEL, input: 'hello', encoding_format: 'base64' })
    const bytes = Buffer.from(base64.data[0].embedding as unknown as string, 'base64')
    expect(Array.from({ length: 8 }, (_, index) => bytes.readFloatLE(index * 4))).toEqual(fakeVector('hello'))
    await expect(client.embeddings.create({ model: FAKE_MODEL, input: [[1, 2, 3]] })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/token arrays/) })
  })
})

describe('models', () => {
  it('lists servable models as NAME@VERSION and retrieves one', async () => {
    const ids: string[] = []
    for await (const model of client.models.list()) ids.push(model.id)
    expect(ids).toEqual([FAKE_MODEL, 'remote@3.0.0'])
    const model = await client.models.retrieve(FAKE_MODEL)
    expect(model).toMatchObject({ id: FAKE_MODEL, object: 'model', owned_by: 'fake-publisher', local: true })
    expect(await client.models.retrieve('remote@3.0.0')).toMatchObject({ owned_by: 'bkg-mesh', local: false, peers: ['12D3KooWOtherPeer'] })
    await expect(client.models.retrieve('nope@1.0.0')).rejects.toBeInstanceOf(OpenAI.NotFoundError)
  })
})

describe('responses', () => {
  it('plain: input string and instructions; output_text', async () => {
    const response = await client.responses.create({ model: FAKE_MODEL, input: 'hello', instructions: 'be brief', max_output_tokens: 2 })
    expect(response.output_text).toBe('t0 t1 ')
    expect(response).toMatchObject({ object: 'response', status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, model: FAKE_MODEL, usage: { input_tokens: 7, output_tokens: 2, total_tokens: 9 } })
    expect((response as unknown as { served_by: string }).served_by).toBe(FAKE_PEER)
    expect(fake.llm.calls[0].request).toMatchObject({ messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }], maxTokens: 2 })
    const messages = await client.responses.create({ model: FAKE_MODEL, input: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: [{ type: 'input_text', text: 'c' }] }] })
    expect(messages.status).toBe('completed')
    expect(fake.llm.calls[1].request.messages).toEqual([{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }])
  })

  it('streamed: created, deltas, done events and completed, as the SDK types and accumulates them', async () => {
    const stream = await client.responses.create({ model: FAKE_MODEL, input: 'hello', stream: true })
    const events: OpenAI.Responses.ResponseStreamEvent[] = []
    for await (const event of stream) events.push(event)
    const types = events.map((event) => event.type)
    expect(types.slice(0, 4)).toEqual(['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added'])
    expect(types.slice(-4)).toEqual(['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed'])
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => index))
    const deltas = events.filter((event): event is OpenAI.Responses.ResponseTextDeltaEvent => event.type === 'response.output_text.delta')
    expect(deltas.map((event) => event.delta).join('')).toBe('t0 t1 t2 t3 t4 ')
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent
    expect(completed.response.status).toBe('completed')
    expect(completed.response.usage?.output_tokens).toBe(5)
    // the SDK's stream helper builds the same response
    const helper = client.responses.stream({ model: FAKE_MODEL, input: 'hello' })
    const final = await helper.finalResponse()
    expect(final.output_text).toBe('t0 t1 t2 t3 t4 ')
  })

  it('json_schema through text.format; tools and previous_response_id are refused', async () => {
    const response = await client.responses.create({ model: FAKE_MODEL, input: 'json', text: { format: { type: 'json_schema', name: 'x', schema: { type: 'object' } } } })
    expect(JSON.parse(response.output_text)).toEqual({ name: 'ab', n: 2 })
    await expect(client.responses.create({ model: FAKE_MODEL, input: 'x', tools: [{ type: 'function', name: 'f', parameters: {}, strict: false }] })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/tools/) })
    await expect(client.responses.create({ model: FAKE_MODEL, input: 'x', previous_response_id: 'resp_1' })).rejects.toMatchObject({ status: 400 })
  })
})
