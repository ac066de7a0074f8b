/**
 * The inference tools (llm_chat, llm_embed, llm_models) on a real node with the signed test model
 * loaded, through both official MCP clients: the v1 SDK client (2025-11-25, a session) and the v2
 * client (2026-07-28, stateless). A seeded chat gives the REST route's text; tokens come as
 * progress; a cancelled call stops generation on the node; a bad model is a tool error.
 */
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBkg } from '../helpers/cli.ts'
import { createToken } from '../helpers/events.ts'
import { packTestModel, type PackedTestModel } from '../helpers/llm.ts'
import { tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'
import { toolErrorOf } from './app.ts'

interface Progress { progress: number, message?: string }
interface ToolResult { isError?: boolean, content?: Array<{ type: string, text?: string }>, structuredContent?: Record<string, any> }

/** the two clients behind one face */
interface AnyClient {
  listTools: () => Promise<Array<{ name: string, annotations?: Record<string, unknown> }>>
  call: (name: string, args: Record<string, unknown>, options?: { onprogress?: (p: Progress) => void, signal?: AbortSignal }) => Promise<ToolResult>
  close: () => Promise<void>
}

async function legacyClient (url: URL, token: string): Promise<AnyClient> {
  const transport = new LegacyTransport(url, { requestInit: { headers: { Authorization: `Bearer ${token}` } } })
  const client = new LegacyClient({ name: 'v1-test', version: '1.0.0' })
  await client.connect(transport)
  return {
    listTools: async () => (await client.listTools()).tools,
    call: async (name, args, options) => await client.callTool({ name, arguments: args }, undefined, options) as ToolResult,
    close: async () => {
      await transport.terminateSession().catch(() => {})
      await client.close()
    }
  }
}

async function modernClient (url: URL, token: string): Promise<AnyClient> {
  const client = new ModernClient({ name: 'v2-test', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } })
  await client.connect(new ModernTransport(url, { requestInit: { headers: { Authorization: `Bearer ${token}` } } }))
  return {
    listTools: async () => (await client.listTools()).tools as Array<{ name: string, annotations?: Record<string, unknown> }>,
    call: async (name, args, options) => await client.callTool({ name, arguments: args }, options) as unknown as ToolResult,
    close: async () => { await client.close() }
  }
}

/** bkg_llm_requests_total{outcome="cancelled"} summed over models */
async function cancelledRequests (node: TestNode): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${node.token}` } })).text()
  return text.split('\n')
    .filter((line) => line.startsWith('bkg_llm_requests_total{') && line.includes('outcome="cancelled"'))
    .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0)
}

let tmp: Awaited<ReturnType<typeof tempDir>>
let mesh: TestMesh
let node: TestNode
let model: PackedTestModel
let reader: string

beforeAll(async () => {
  tmp = await tempDir()
  mesh = await TestMesh.create(tmp.dir)
  node = await mesh.addNode('a', { roles: ['publisher', 'admin', 'bootstrap', 'member'] })
  model = await packTestModel({ dir: tmp.dir, publisher: node.paths })
  await node.start()
  const published = await runBkg(['model', 'publish', model.path, '--data', node.paths.dir], tmp.dir)
  expect(published.code, published.stderr).toBe(0)
  const loaded = await node.api('POST', '/api/v1/admin/llm/models/load', { model: model.id })
  expect(loaded.status, JSON.stringify(loaded.body)).toBe(200)
  // chatting needs no more than any token of the node
  reader = createToken(node, 'default', 'reader')
}, 60_000)

afterAll(async () => {
  await mesh?.stopAll()
  await tmp?.remove()
})

const hello = { model: 'tiny-llama@1.0.0', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 40, seed: 7, temperature: 0.8 }

describe.each([
  ['v1 client (2025-11-25)', legacyClient],
  ['v2 client (2026-07-28)', modernClient]
])('%s', (_era, connect) => {
  let client: AnyClient
  beforeAll(async () => { client = await connect(new URL(`${node.url}/mcp`), reader) })
  afterAll(async () => { await client?.close() })

  it('lists llm_chat, llm_embed and llm_models; llm_models shows the loaded model', async () => {
    const tools = await client.listTools()
    expect(tools.map((tool) => tool.name)).toEqual(expect.arrayContaining(['llm_chat', 'llm_embed', 'llm_models']))
    expect(tools.find((tool) => tool.name === 'llm_models')?.annotations).toMatchObject({ readOnlyHint: true })
    const models = await client.call('llm_models', {})
    expect(models.isError).toBeFalsy()
    expect(models.structuredContent).toMatchObject({
      default: model.id,
      servable: [{ id: model.id, local: true, peers: [] }],
      held: [{ id: model.id, sha256: model.sha256, loaded: true, architecture: 'llama', embeddingLength: 64 }]
    })
  })

  it('a seeded llm_chat gives the text of POST /api/v1/llm/chat with the same body, streamed as progress', async () => {
    const rest = await node.api('POST', '/api/v1/llm/chat', hello, reader)
    expect(rest.status, JSON.stringify(rest.body)).toBe(200)
    const progress: Progress[] = []
    const result = await client.call('llm_chat', hello, { onprogress: (p) => progress.push(p) })
    expect(result.isError, JSON.stringify(result.content)).toBeFalsy()
    expect(result.structuredContent).toMatchObject({
      text: rest.body.text,
      finish_reason: rest.body.finish_reason,
      usage: rest.body.usage,
      served_by: node.peerId,
      model: model.id,
      model_sha256: model.sha256,
      backend: rest.body.backend,
      deterministic: true
    })
    expect(rest.body.text.length).toBeGreaterThan(0)
    // clients that read only the text block get the answer itself
    expect(result.content).toEqual([{ type: 'text', text: rest.body.text }])
    const streamed = progress.map((p) => p.message ?? '').filter((message) => !/^running for \d+ s$/.test(message)).join('')
    expect(streamed).toBe(rest.body.text)
    // the prompt shortcut is one user message
    const prompted = await client.call('llm_chat', { ...hello, messages: undefined, prompt: 'Hello there' })
    expect(prompted.structuredContent?.text).toBe(rest.body.text)
  })

  it('json_schema constrains the answer as response_format json_schema does over REST', async () => {
    const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, ok: { type: 'boolean' } }, required: ['name', 'ok'] }
    const rest = await node.api('POST', '/api/v1/llm/chat', { ...hello, max_tokens: 200, response_format: { type: 'json_schema', json_schema: { schema } } }, reader)
    expect(rest.status, JSON.stringify(rest.body)).toBe(200)
    const result = await client.call('llm_chat', { ...hello, max_tokens: 200, json_schema: schema })
    expect(result.structuredContent).toMatchObject({ text: rest.body.text, finish_reason: 'stop' })
    expect(JSON.parse(result.structuredContent?.text)).toMatchObject({ name: expect.any(String), ok: expect.any(Boolean) })
  })

  it('llm_embed gives the model\'s 64 dimensions, one vector per text', async () => {
    const one = await client.call('llm_embed', { input: 'the same text' })
    expect(one.isError, JSON.stringify(one.content)).toBeFalsy()
    expect(one.structuredContent).toMatchObject({ model: model.id, dimensions: 64, served_by: node.peerId })
    expect(one.structuredContent?.embeddings).toHaveLength(1)
    expect(one.structuredContent?.embeddings[0]).toHaveLength(64)
    const two = await client.call('llm_embed', { model: model.id, input: ['the same text', 'another'] })
    expect(two.structuredContent?.embeddings).toHaveLength(2)
    expect(two.structuredContent?.embeddings[0]).toEqual(one.structuredContent?.embeddings[0])
  })

  it('a bad model or bad arguments are tool errors, not protocol errors', async () => {
    expect(toolErrorOf(await client.call('llm_chat', { ...hello, model: 'no-such@1.0.0' }))).toMatchObject({ code: 'llm_model_not_found' })
    expect(toolErrorOf(await client.call('llm_embed', { model: 'no-such@1.0.0', input: 'x' }))).toMatchObject({ code: 'llm_model_not_found' })
    expect(toolErrorOf(await client.call('llm_chat', { model: model.id }))).toMatchObject({ code: 'invalid_input' })
    expect(toolErrorOf(await client.call('llm_chat', { ...hello, prompt: 'both' }))).toMatchObject({ code: 'invalid_input' })
  })

  it('cancelling the call stops generation on the node', async () => {
    const before = await cancelledRequests(node)
    const controller = new AbortController()
    const call = client.call('llm_chat', { prompt: 'Tell a long story', max_tokens: 100_000 }, {
      signal: controller.signal,
      // aborts once generation is known to be running
      onprogress: (p) => { if (!/^running for/.test(p.message ?? '')) controller.abort(new Error('stop')) }
    })
    await expect(call).rejects.toThrow()
    await waitFor('the node to count the chat cancelled', async () => await cancelledRequests(node) > before, 10_000)
  })
})
