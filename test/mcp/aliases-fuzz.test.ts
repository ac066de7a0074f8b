/**
 * The seed's JSON-RPC aliases (`POST /mcp/init`, `/mcp/list-tools`, `/mcp/execute`), plain and as
 * JSON-RPC envelopes, and fast-check garbage against every MCP path: each answer is a 4xx or a
 * JSON-RPC error (never a 5xx, never a dropped connection), and the server keeps serving.
 *
 *   BKG_FUZZ_SEED=<int>   another seed (the suite prints the one it used)
 *   BKG_FUZZ_RUNS=<k>x    k times the default number of cases
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './app.ts'

let t: TestApp
beforeAll(async () => { t = await startApp() })
afterAll(async () => { await t.close() })

async function post (path: string, body: unknown, token = t.tokens.writer): Promise<{ status: number, json: Record<string, any> }> {
  const response = await fetch(`${t.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: response.status, json: await response.json() as Record<string, any> }
}

describe('JSON-RPC aliases', () => {
  it('/mcp/init answers as initialize: protocolVersion, serverInfo, capabilities', async () => {
    const plain = await post('/mcp/init', {})
    expect(plain.status).toBe(200)
    expect(plain.json).toMatchObject({ protocolVersion: '2026-07-28', serverInfo: { name: 'bkg', version: expect.any(String) }, capabilities: { tools: {} }, instructions: expect.stringContaining('sandbox_') })
    expect(plain.json.supportedVersions).toEqual(expect.arrayContaining(['2026-07-28', '2025-11-25']))
    const rpc = await post('/mcp/init', { jsonrpc: '2.0', id: 'a1', method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } })
    expect(rpc.json).toMatchObject({ jsonrpc: '2.0', id: 'a1', result: { protocolVersion: '2026-07-28', serverInfo: { name: 'bkg' } } })
    // without a body at all
    const empty = await fetch(`${t.url}/mcp/init`, { method: 'POST', headers: { authorization: `Bearer ${t.tokens.writer}` } })
    expect(empty.status).toBe(200)
  })

  it('/mcp/list-tools lists the tools', async () => {
    const plain = await post('/mcp/list-tools', {})
    expect(plain.json.tools.map((tool: { name: string }) => tool.name)).toContain('sandbox_run')
    const rpc = await post('/mcp/list-tools', { jsonrpc: '2.0', id: 2, method: 'tools/list' })
    expect(rpc.json).toMatchObject({ jsonrpc: '2.0', id: 2, result: { tools: expect.arrayContaining([expect.objectContaining({ name: 'sandbox_run', annotations: expect.any(Object) })]) } })
  })

  it('/mcp/execute calls a tool with the caller\'s token', async () => {
    const plain = await post('/mcp/execute', { name: 'sandbox_run', arguments: { code: 'print:via alias' } })
    expect(plain.status).toBe(200)
    expect(plain.json).toMatchObject({ structuredContent: { stdout: 'via alias\n', exitCode: 0 }, content: [{ type: 'text' }] })
    const rpc = await post('/mcp/execute', { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'sandbox_run', arguments: { code: 'print:rpc' } } })
    expect(rpc.json).toMatchObject({ jsonrpc: '2.0', id: 3, result: { structuredContent: { stdout: 'rpc\n' } } })
    // tool errors stay tool results; the principal is the caller's
    const refused = await post('/mcp/execute', { name: 'models_pull', arguments: { name: 'tiny' } })
    expect(refused.json.isError).toBe(true)
    expect(JSON.parse(refused.json.content[0].text)).toMatchObject({ error: { code: 'forbidden' } })
    const admin = await post('/mcp/execute', { name: 'models_pull', arguments: { name: 'tiny' } }, t.tokens.admin)
    expect(admin.json.structuredContent).toMatchObject({ name: 'tiny' })
  })

  it('refuses what is not a call: 400 plain, a JSON-RPC error in an envelope', async () => {
    expect(await post('/mcp/execute', { arguments: {} })).toMatchObject({ status: 400, json: { error: { code: 'invalid_request' } } })
    expect(await post('/mcp/execute', { name: 'sandbox_run', arguments: [1] })).toMatchObject({ status: 400 })
    expect(await post('/mcp/execute', [1, 2])).toMatchObject({ status: 400 })
    expect(await post('/mcp/execute', { name: 'no_such_tool' })).toMatchObject({ status: 400, json: { error: { message: expect.stringContaining('no_such_tool') } } })
    const rpc = await post('/mcp/execute', { jsonrpc: '2.0', id: 9, params: { name: 42 } })
    expect(rpc).toMatchObject({ status: 200, json: { jsonrpc: '2.0', id: 9, error: { code: -32602 } } })
  })
})

function fuzzSeed (): number {
  const raw = process.env.BKG_FUZZ_SEED
  return raw != null && raw.trim() !== '' ? Number(raw) | 0 : 20261206
}

function fuzzRuns (base: number): number {
  const multiplier = /^(\d+(?:\.\d+)?)x$/i.exec(process.env.BKG_FUZZ_RUNS?.trim() ?? '')
  return Math.max(1, Math.round(base * (multiplier != null ? Number(multiplier[1]) : 1)))
}

const METHODS = ['initialize', 'notifications/initialized', 'tools/list', 'tools/call', 'server/discover', 'ping', 'notifications/cancelled', 'resources/list', 'subscriptions/listen', 'logging/setLevel', '', 'x/y']
const TOOLS = ['sandbox_run', 'sandbox_create', 'sandbox_fork', 'storage_put', 'events_publish', 'models_pull', 'nope']
const hostile = fc.oneof(
  fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null),
  fc.constant('\u0000'), fc.constant('\ud800'), fc.constant(Number.MAX_SAFE_INTEGER + 2), fc.constant(-1), fc.constant('9'.repeat(400)),
  fc.constant({ __proto__: { polluted: true } }), fc.constant([]), fc.constant({})
)
const anyJson = fc.jsonValue({ maxDepth: 4 })
const meta = fc.record({
  'io.modelcontextprotocol/protocolVersion': fc.oneof(fc.constant('2026-07-28'), fc.constant('2025-11-25'), fc.string()),
  'io.modelcontextprotocol/clientInfo': fc.oneof(fc.constant({ name: 'f', version: '1' }), hostile),
  'io.modelcontextprotocol/clientCapabilities': fc.oneof(fc.constant({}), hostile),
  progressToken: fc.oneof(fc.string(), fc.integer(), hostile)
}, { requiredKeys: [] })
const args = fc.dictionary(fc.constantFrom('code', 'language', 'timeoutMs', 'sandboxId', 'files', 'stdin', 'module', 'count', 'payload', 'namespace', 'bucket', 'key', 'base64', 'policy', 'name'), fc.oneof(hostile, anyJson, fc.constant('sleep:50')))
const rpcLike = fc.record({
  jsonrpc: fc.oneof(fc.constant('2.0'), hostile),
  id: fc.oneof(fc.integer(), fc.string(), fc.constant(null), hostile),
  method: fc.oneof(fc.constantFrom(...METHODS), hostile),
  params: fc.oneof(fc.record({ name: fc.oneof(fc.constantFrom(...TOOLS), hostile), arguments: fc.oneof(args, hostile), _meta: meta, protocolVersion: fc.oneof(fc.constant('2025-11-25'), hostile), capabilities: fc.oneof(fc.constant({}), hostile), clientInfo: fc.oneof(fc.constant({ name: 'f', version: '1' }), hostile) }, { requiredKeys: [] }), hostile)
}, { requiredKeys: [] })
const body = fc.oneof(
  { weight: 6, arbitrary: rpcLike.map((value) => JSON.stringify(value)) },
  { weight: 1, arbitrary: fc.array(rpcLike, { maxLength: 4 }).map((value) => JSON.stringify(value)) },
  { weight: 1, arbitrary: anyJson.map((value) => JSON.stringify(value)) },
  { weight: 1, arbitrary: fc.string() },
  { weight: 1, arbitrary: fc.constantFrom('', '{', '[[[[[[[[', '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":', 'null', '"x"', '[]') }
)
const headers = fc.record({
  'mcp-protocol-version': fc.constantFrom('2026-07-28', '2025-11-25', '2025-03-26', 'garbage', ''),
  'mcp-method': fc.constantFrom(...METHODS.filter((method) => method !== '')),
  'mcp-name': fc.constantFrom(...TOOLS),
  'mcp-session-id': fc.constantFrom('00000000-0000-0000-0000-000000000000', 'x', 'a'.repeat(300)),
  accept: fc.constantFrom('application/json, text/event-stream', 'application/json', 'text/event-stream', '*/*'),
  'content-type': fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded')
}, { requiredKeys: [] })

describe('fuzzing: JSON-RPC garbage', () => {
  it('every answer is a 4xx or a JSON-RPC answer, never a 5xx, and the server keeps serving', async () => {
    const seed = fuzzSeed()
    console.log(`MCP fuzz seed ${seed} (BKG_FUZZ_SEED to replay)`)
    await fc.assert(fc.asyncProperty(
      fc.constantFrom('/mcp', '/mcp', '/mcp', '/mcp/init', '/mcp/list-tools', '/mcp/execute'),
      fc.constantFrom('POST', 'POST', 'POST', 'GET', 'DELETE'),
      headers, body,
      async (path, method, extra, text) => {
        const controller = new AbortController()
        const timer = setTimeout(() => controller.abort(), 3000)
        try {
          const response = await fetch(`${t.url}${path}`, {
            method,
            headers: { authorization: `Bearer ${t.tokens.writer}`, 'content-type': 'application/json', ...extra },
            ...(method === 'POST' ? { body: text } : {}),
            signal: controller.signal
          })
          expect(response.status, `${method} ${path} ${JSON.stringify(extra)} ${text.slice(0, 200)}`).toBeLessThan(500)
          // a GET that opened an SSE stream is a valid answer: do not wait for it to end
          if ((response.headers.get('content-type') ?? '').startsWith('text/event-stream') && method === 'GET') return
          const answer = await response.text()
          if (response.status >= 400 && answer !== '') {
            const json = JSON.parse(answer) as { error?: unknown }
            expect(json.error, answer).toBeDefined()
          }
        } catch (err) {
          if (controller.signal.aborted) return // a long run (sleep:…) that fast-check did not wait for
          throw err
        } finally {
          clearTimeout(timer)
        }
      }
    ), { seed, numRuns: fuzzRuns(400) })
    // still serving
    const after = await post('/mcp/execute', { name: 'sandbox_run', arguments: { code: 'print:alive' } })
    expect(after.json.structuredContent.stdout).toBe('alive\n')
  })
})
