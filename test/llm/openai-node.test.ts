/**
 * The official `openai` client, SSE, the WebSocket and `bkg llm` against a real node serving the
 * project's signed test model: chat (plain, streamed, json_schema, a tool call round trip),
 * embeddings, models, responses; a client that goes away cancels its generation.
 */
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { runBkg } from '../helpers/cli.ts'
import { packTestModel, type PackedTestModel } from '../helpers/llm.ts'
import { tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

let tmp: Awaited<ReturnType<typeof tempDir>>
let mesh: TestMesh
let node: TestNode
let model: PackedTestModel
let client: OpenAI

const cosine = (a: number[], b: number[]): number => {
  let dot = 0
  let na = 0
  let nb = 0
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i]
    na += a[i] * a[i]
    nb += b[i] * b[i]
  }
  return dot / Math.sqrt(na * nb)
}

async function metric (name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${node.token}` } })).text()
  const line = text.split('\n').find((entry) => entry.startsWith(`${name}{`) && entry.includes(labels))
  return line == null ? 0 : Number(line.split(' ').at(-1))
}

beforeAll(async () => {
  tmp = await tempDir('bkg-openai-node-')
  mesh = await TestMesh.create(tmp.dir)
  node = await mesh.addNode('a', { roles: ['publisher', 'member'] })
  model = await packTestModel({ dir: tmp.dir, publisher: node.paths })
  await node.start()
  const published = await runBkg(['model', 'publish', model.path, '--data', node.paths.dir], tmp.dir)
  expect(published.code, published.stderr).toBe(0)
  const loaded = await runBkg(['llm', 'load', model.id, '--default', '--data', node.paths.dir], tmp.dir)
  expect(loaded.code, loaded.stderr).toBe(0)
  expect(loaded.stdout).toMatch(new RegExp(`^${model.id} loaded \\(llama, context \\d+; 0/\\d+ slots\\), default\\n$`))
  client = new OpenAI({ apiKey: node.token, baseURL: `${node.url}/v1`, maxRetries: 0 })
}, 120_000)

afterAll(async () => {
  await mesh?.stopAll()
  await tmp?.remove()
})

describe('the openai client on a real node', () => {
  const question: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Hello there' }]

  it('chat: plain and streamed give the same seeded text; usage counts; served_by and the header name the node', async () => {
    const { data: plain, response } = await client.chat.completions.create({ model: model.id, messages: question, max_tokens: 24, seed: 5, temperature: 0.7 }).withResponse()
    expect(response.headers.get('x-bkg-served-by')).toBe(node.peerId)
    expect((plain as unknown as { served_by: string }).served_by).toBe(node.peerId)
    const text = plain.choices[0].message.content!
    expect(text.length).toBeGreaterThan(0)
    // the test model never ends its text on its own
    expect(plain.choices[0].finish_reason).toBe('length')
    expect(plain.usage).toMatchObject({ completion_tokens: 24 })
    expect(plain.usage!.total_tokens).toBe(plain.usage!.prompt_tokens + 24)

    const stream = await client.chat.completions.create({ model: model.id, messages: question, max_tokens: 24, seed: 5, temperature: 0.7, stream: true, stream_options: { include_usage: true } })
    let streamed = ''
    let usage: OpenAI.CompletionUsage | null | undefined
    let deltas = 0
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta.content
      if (piece != null && piece !== '') deltas++
      streamed += piece ?? ''
      usage = chunk.usage ?? usage
    }
    expect(streamed).toBe(text)
    expect(deltas).toBeGreaterThan(1)
    expect(usage).toEqual(plain.usage)
  })

  it('json_schema: the content parses and matches the schema', async () => {
    const schema = {
      type: 'object',
      properties: { name: { type: 'string', maxLength: 8 }, size: { enum: ['small', 'large'] }, ok: { type: 'boolean' } },
      required: ['name', 'size', 'ok'],
      additionalProperties: false
    }
    const completion = await client.chat.completions.create({ model: model.id, messages: question, max_tokens: 400, response_format: { type: 'json_schema', json_schema: { name: 'thing', schema } } })
    const value = JSON.parse(completion.choices[0].message.content!)
    expect(Object.keys(value).sort()).toEqual(['name', 'ok', 'size'])
    expect(typeof value.name).toBe('string')
    expect(value.name.length).toBeLessThanOrEqual(8)
    expect(['small', 'large']).toContain(value.size)
    expect(typeof value.ok).toBe('boolean')
  })

  it('tools: a required call comes back with arguments matching its schema; its result goes back in', async () => {
    const tools: OpenAI.ChatCompletionTool[] = [{
      type: 'function',
      function: { name: 'get_time', description: 'the time in a zone', parameters: { type: 'object', properties: { zone: { enum: ['UTC', 'CET'] } }, required: ['zone'], additionalProperties: false } }
    }]
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What time is it?' }]
    const first = await client.chat.completions.create({ model: model.id, messages, tools, tool_choice: 'required', max_tokens: 400 })
    const choice = first.choices[0]
    expect(choice.finish_reason).toBe('tool_calls')
    const call = choice.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall
    expect(call.id).toMatch(/^call_[0-9a-f]{24}$/)
    expect(call.function.name).toBe('get_time')
    expect(['UTC', 'CET']).toContain(JSON.parse(call.function.arguments).zone)
    messages.push(choice.message, { role: 'tool', tool_call_id: call.id, content: '12:00' })
    const second = await client.chat.completions.create({ model: model.id, messages, tools, tool_choice: 'none', max_tokens: 8 })
    expect(second.choices[0].message.tool_calls ?? []).toEqual([])
    expect(second.choices[0].message.content!.length).toBeGreaterThan(0)
    // streamed, the SDK assembles the same kind of call
    const runner = client.chat.completions.stream({ model: model.id, messages: [{ role: 'user', content: 'Time?' }], tools, tool_choice: 'required', max_tokens: 400 })
    const final = await runner.finalChatCompletion()
    expect((final.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function.name).toBe('get_time')
  })

  it('embeddings: the model\'s dimension, cosine 1 for equal text, base64 and float agree', async () => {
    const { data } = await client.embeddings.create({ model: model.id, input: ['same text', 'same text', 'other words'] })
    expect(data.map((entry) => entry.embedding.length)).toEqual([64, 64, 64])
    expect(cosine(data[0].embedding, data[1].embedding)).toBeCloseTo(1, 6)
    expect(cosine(data[0].embedding, data[2].embedding)).toBeLessThan(0.9999)
    const float = await client.embeddings.create({ model: model.id, input: 'same text', encoding_format: 'float' })
    float.data[0].embedding.forEach((value, index) => expect(value).toBeCloseTo(data[0].embedding[index], 6))
  })

  it('models: NAME@VERSION ids', async () => {
    const ids: string[] = []
    for await (const entry of client.models.list()) ids.push(entry.id)
    expect(ids).toContain(model.id)
    expect(await client.models.retrieve(model.id)).toMatchObject({ id: model.id, object: 'model', local: true })
  })

  it('responses: plain and streamed', async () => {
    const plain = await client.responses.create({ model: model.id, input: 'Hello there', instructions: 'Be brief.', max_output_tokens: 16, seed: 3 } as OpenAI.Responses.ResponseCreateParamsNonStreaming)
    expect(plain.output_text.length).toBeGreaterThan(0)
    expect(plain.usage?.output_tokens).toBe(16)
    const helper = client.responses.stream({ model: model.id, input: 'Hello there', instructions: 'Be brief.', max_output_tokens: 16, seed: 3 } as unknown as Parameters<OpenAI['responses']['stream']>[0])
    let deltas = ''
    helper.on('response.output_text.delta', (event) => { deltas += event.delta })
    const final = await helper.finalResponse()
    expect(final.output_text).toBe(plain.output_text)
    expect(deltas).toBe(plain.output_text)
  })
})

describe('streams on a real node', () => {
  const body = { model: undefined, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 12, seed: 11 }

  it('SSE, the WebSocket and bkg llm chat give the seeded text of the JSON answer', async () => {
    const plain = await node.api('POST', '/api/v1/llm/chat', body)
    expect(plain.status).toBe(200)
    const sse = await fetch(`${node.url}/api/v1/llm/chat`, { method: 'POST', headers: { authorization: `Bearer ${node.token}`, 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(body) })
    expect(sse.headers.get('x-bkg-served-by')).toBe(node.peerId)
    const events = (await sse.text()).split('\n\n').filter((block) => block !== '').map((block) => ({ event: /^event: (.*)$/m.exec(block)![1], data: JSON.parse(/^data: (.*)$/m.exec(block)![1]) }))
    expect(events[0].event).toBe('start')
    expect(events.at(-1)!.event).toBe('done')
    expect(events.filter((event) => event.event === 'token').map((event) => event.data.text).join('')).toBe(plain.body.text)

    const socket = new WebSocket(`${node.url.replace('http', 'ws')}/api/v1/llm/chat/ws?token=${node.token}`)
    const frames: any[] = []
    socket.on('message', (data) => frames.push(JSON.parse(String(data))))
    await new Promise((resolve) => socket.once('open', resolve))
    socket.send(JSON.stringify({ type: 'chat', id: 'q', ...body }))
    await waitFor('the done frame', async () => frames.some((frame) => frame.type === 'done'))
    socket.close()
    expect(frames.filter((frame) => frame.type === 'token').map((frame) => frame.text).join('')).toBe(plain.body.text)
    expect(frames.at(-1).result.served_by).toBe(node.peerId)

    const cli = await runBkg(['llm', 'chat', 'default', 'Hello there', '--max-tokens', '12', '--seed', '11', '--data', node.paths.dir], tmp.dir)
    expect(cli.code, cli.stderr).toBe(0)
    expect(cli.stdout).toBe(plain.body.text.endsWith('\n') ? plain.body.text : `${plain.body.text}\n`)
    expect(cli.stderr).toContain(`served by ${node.peerId}`)
  })

  it('a client that goes away mid-stream cancels its generation', async () => {
    const before = await metric('bkg_llm_requests_total', 'outcome="cancelled"')
    const generatedBefore = await metric('bkg_llm_generated_tokens_total', model.id)
    const controller = new AbortController()
    const response = await fetch(`${node.url}/api/v1/llm/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${node.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1800, stream: true }),
      signal: controller.signal
    })
    const reader = response.body!.getReader()
    let seen = ''
    while ((seen.match(/event: token/g) ?? []).length < 3) seen += new TextDecoder().decode((await reader.read()).value)
    controller.abort()
    await waitFor('the request counted as cancelled', async () => await metric('bkg_llm_requests_total', 'outcome="cancelled"') > before)
    const generated = await metric('bkg_llm_generated_tokens_total', model.id) - generatedBefore
    expect(generated).toBeLessThan(1800)
    const { body: listed } = await node.api('GET', '/api/v1/admin/llm/models')
    await waitFor('the slot freed', async () => (await node.api('GET', '/api/v1/admin/llm/models')).body.models.find((entry: any) => entry.id === model.id)?.slots.busy === 0)
    expect(listed.models.some((entry: any) => entry.id === model.id)).toBe(true)
  })
})
