/**
 * /mcp with both official clients over real HTTP: the v1 SDK 1.32 client (2025-11-25, a session
 * with Mcp-Session-Id) and the v2 client (versionNegotiation auto: 2026-07-28, stateless). Tools,
 * annotations and schemas, calls with progress, cancellation that reaches the running code, tool
 * errors, tokens and the principal every call acts with.
 */
import { once } from 'node:events'
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { Client as V2Client, StreamableHTTPClientTransport as V2Transport } from '@modelcontextprotocol/client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BkgError } from '../../lib/bkg-error.ts'
import { sleep, startApp, toolErrorOf, type TestApp } from './app.ts'

interface Progress { progress: number, total?: number, message?: string }
interface ToolResult { isError?: boolean, content?: unknown, structuredContent?: Record<string, unknown> }
interface Tool { name: string, inputSchema: { properties?: Record<string, { default?: unknown }>, required?: string[] }, outputSchema?: unknown, annotations?: Record<string, unknown> }

/** the two clients behind one face */
interface AnyClient {
  era: string
  listTools: () => Promise<Tool[]>
  call: (name: string, args: Record<string, unknown>, options?: { onprogress?: (p: Progress) => void, signal?: AbortSignal }) => Promise<ToolResult>
  close: () => Promise<void>
}

async function v1Client (url: URL, token: string): Promise<AnyClient & { transport: V1Transport }> {
  const transport = new V1Transport(url, { requestInit: { headers: { Authorization: `Bearer ${token}` } } })
  const client = new V1Client({ name: 'v1-test', version: '1.0.0' })
  await client.connect(transport)
  return {
    transport,
    era: `${transport.protocolVersion ?? '?'} session ${transport.sessionId != null ? 'yes' : 'no'}`,
    listTools: async () => (await client.listTools()).tools as Tool[],
    call: async (name, args, options) => await client.callTool({ name, arguments: args }, undefined, { ...options, ...(options?.onprogress != null ? { resetTimeoutOnProgress: true } : {}) }) as ToolResult,
    close: async () => {
      await transport.terminateSession().catch(() => {})
      await client.close()
    }
  }
}

async function v2Client (url: URL, token: string): Promise<AnyClient> {
  const client = new V2Client({ name: 'v2-test', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } })
  await client.connect(new V2Transport(url, { requestInit: { headers: { Authorization: `Bearer ${token}` } } }))
  return {
    era: `${client.getProtocolEra() ?? '?'} ${client.getNegotiatedProtocolVersion() ?? '?'}`,
    listTools: async () => (await client.listTools()).tools as unknown as Tool[],
    call: async (name, args, options) => await client.callTool({ name, arguments: args }, options) as unknown as ToolResult,
    close: async () => { await client.close() }
  }
}

let t: TestApp
beforeAll(async () => { t = await startApp() })
afterAll(async () => { await t.close() })

describe.each([
  ['v1 client (2025-11-25)', v1Client, /^2025-11-25 session yes$/],
  ['v2 client (auto → 2026-07-28)', v2Client, /^modern 2026-07-28$/]
])('%s', (_name, connect, era) => {
  let client: AnyClient
  beforeAll(async () => { client = await connect(t.mcpUrl, t.tokens.writer) })
  afterAll(async () => { await client.close() })

  it('negotiates its era', () => {
    expect(client.era).toMatch(era)
  })

  it('lists every tool with annotations; sandbox_run takes code, language (default js) and timeoutMs', async () => {
    const tools = await client.listTools()
    const names = tools.map((tool) => tool.name).sort()
    expect(names).toEqual([
      'events_publish', 'events_query', 'models_catalog', 'models_list', 'models_pull', 'models_pull_status', 'peers_list',
      'sandbox_create', 'sandbox_delete', 'sandbox_fork', 'sandbox_inspect', 'sandbox_list', 'sandbox_restore', 'sandbox_run', 'sandbox_snapshot', 'sandbox_stop',
      'storage_create_bucket', 'storage_get', 'storage_list', 'storage_put'
    ])
    for (const tool of tools) {
      expect(tool.annotations, tool.name).toMatchObject({ readOnlyHint: expect.any(Boolean), destructiveHint: expect.any(Boolean), idempotentHint: expect.any(Boolean), openWorldHint: expect.any(Boolean) })
    }
    const run = tools.find((tool) => tool.name === 'sandbox_run')!
    expect(Object.keys(run.inputSchema.properties ?? {})).toEqual(expect.arrayContaining(['code', 'language', 'timeoutMs', 'sandboxId', 'stdin', 'files', 'module']))
    expect(run.inputSchema.required).toEqual(['code'])
    expect(run.inputSchema.properties?.language.default).toBe('js')
    expect(run.outputSchema).toBeDefined()
    expect(tools.find((tool) => tool.name === 'sandbox_list')!.annotations).toMatchObject({ readOnlyHint: true, destructiveHint: false })
    expect(tools.find((tool) => tool.name === 'sandbox_delete')!.annotations).toMatchObject({ readOnlyHint: false, destructiveHint: true })
  })

  it('runs code: stdout, stderr, exit code, files in and out as text and structuredContent', async () => {
    const result = await client.call('sandbox_run', {
      code: 'print:hello\nerr:careful\ncat:/in.txt\nwrite:/out.txt=written\nbinary:/out.bin\nexit:3',
      files: { '/in.txt': 'from a file\n' }
    })
    expect(result.isError).toBeFalsy()
    expect(result.structuredContent).toMatchObject({
      exitCode: 3,
      stdout: 'hello\nfrom a file\n',
      stderr: 'careful\n',
      files: { '/out.txt': 'written', '/out.bin': { base64: Buffer.from([0xff, 0x00, 0xfe]).toString('base64') } }
    })
    const text = (result.content as Array<{ text: string }>)[0].text
    expect(JSON.parse(text)).toEqual(result.structuredContent)
  })

  it('sends progress with the output while code runs', async () => {
    const progress: Progress[] = []
    const result = await client.call('sandbox_run', { code: 'sleep:300\nprint:done', timeoutMs: 5000 }, { onprogress: (p) => progress.push(p) })
    expect(result.structuredContent?.stdout).toMatch(/tick 1\n[^]*done\n$/)
    expect(progress.length).toBeGreaterThanOrEqual(2)
    expect(progress.map((p) => p.message).join('')).toContain('tick 1\n')
    expect(progress[0].total).toBe(5000)
    for (let i = 1; i < progress.length; i++) expect(progress[i].progress).toBeGreaterThan(progress[i - 1].progress)
  })

  it('cancelling the call ends the run on the server', async () => {
    const aborted = once(t.services.sandboxes.events, 'aborted')
    const started = once(t.services.sandboxes.events, 'start')
    const controller = new AbortController()
    const call = client.call('sandbox_run', { code: 'sleep:30000' }, { signal: controller.signal, onprogress: () => {} })
    await started
    await sleep(100)
    const cancelledAt = Date.now()
    controller.abort('user pressed stop')
    await expect(call).rejects.toThrow()
    const [, reason] = await aborted
    expect(Date.now() - cancelledAt).toBeLessThan(2000)
    expect(reason).toBeDefined()
  })

  it('answers tool errors with a code, never a protocol error', async () => {
    expect(toolErrorOf(await client.call('sandbox_inspect', { sandboxId: 'nope' }))).toMatchObject({ code: 'sandbox_not_found' })
    const bad = toolErrorOf(await client.call('sandbox_run', { code: 'print:x', language: 'cobol' }))
    expect(bad).toMatchObject({ code: 'invalid_input' })
    expect(bad?.message).toMatch(/language/)
    expect(toolErrorOf(await client.call('sandbox_run', { language: 'js' }))).toMatchObject({ code: 'invalid_input' })
    expect(toolErrorOf(await client.call('sandbox_run', { code: 'x', unknown: 1 }))).toMatchObject({ code: 'invalid_input' })
    expect(toolErrorOf(await client.call('storage_put', { bucket: 'b', key: 'k', base64: '***' }))).toMatchObject({ code: 'invalid_input' })
    // admin-only, as its REST route: a namespace token is refused
    expect(toolErrorOf(await client.call('models_pull', { name: 'tiny' }))).toMatchObject({ code: 'forbidden' })
    // an unknown tool is the protocol's business (-32602), and the connection stays usable
    await expect(client.call('no_such_tool', {})).rejects.toThrow(/no_such_tool/)
    expect((await client.call('sandbox_list', {})).isError).toBeFalsy()
  })

  it('drives a persistent sandbox: create, run, snapshot, restore, fork, stop, delete', async () => {
    const box = (await client.call('sandbox_create', { language: 'js' })).structuredContent!
    expect(box).toMatchObject({ mode: 'persistent', namespace: 'lab', state: 'idle' })
    const id = box.id as string
    await client.call('sandbox_run', { sandboxId: id, code: 'set:n=1' })
    const snapshot = (await client.call('sandbox_snapshot', { sandboxId: id })).structuredContent!
    await client.call('sandbox_run', { sandboxId: id, code: 'set:n=2' })
    expect((await client.call('sandbox_run', { sandboxId: id, code: 'get:n' })).structuredContent?.stdout).toBe('2\n')
    await client.call('sandbox_restore', { sandboxId: id, snapshotId: snapshot.id })
    expect((await client.call('sandbox_run', { sandboxId: id, code: 'get:n' })).structuredContent?.stdout).toBe('1\n')
    const forks = (await client.call('sandbox_fork', { sandboxId: id, snapshotId: snapshot.id, count: 2 })).structuredContent!.sandboxes as Array<{ id: string }>
    expect(forks).toHaveLength(2)
    expect((await client.call('sandbox_list', {})).structuredContent!.sandboxes).toEqual(expect.arrayContaining([expect.objectContaining({ id })]))
    expect((await client.call('sandbox_stop', { sandboxId: id })).structuredContent).toMatchObject({ state: 'stopped' })
    expect((await client.call('sandbox_delete', { sandboxId: id })).structuredContent).toEqual({ id, deleted: true })
    expect(toolErrorOf(await client.call('sandbox_inspect', { sandboxId: id }))).toMatchObject({ code: 'sandbox_not_found' })
  })

  it('reaches peers, models, events and storage with the caller\'s token', async () => {
    expect((await client.call('peers_list', { ping: false })).structuredContent!.peers).toMatchObject([{ name: 'node-b', latencyMs: null }])
    expect((await client.call('models_list', {})).structuredContent).toEqual({ models: [] })
    expect((await client.call('models_catalog', {})).structuredContent!.models).toMatchObject([{ name: 'tiny', version: '1.0.0', totalSize: 1000 }])
    const published = (await client.call('events_publish', { namespace: 'lab', type: 'reading', payload: { t: 21.5 } })).structuredContent!
    expect(published).toMatchObject({ namespace: 'lab', type: 'reading', payload: { t: 21.5 } })
    const page = (await client.call('events_query', { namespace: 'lab' })).structuredContent!
    expect(page.events).toEqual(expect.arrayContaining([expect.objectContaining({ id: published.id })]))
    expect(toolErrorOf(await client.call('events_publish', { namespace: 'other', type: 'x', payload: 1 }))).toMatchObject({ code: 'forbidden' })
    const bucket = `b-${Math.random().toString(36).slice(2, 8)}`
    await client.call('storage_create_bucket', { name: bucket })
    expect((await client.call('storage_put', { bucket, key: 'a.txt', text: 'hi there' })).structuredContent).toMatchObject({ key: 'a.txt', size: 8 })
    expect((await client.call('storage_get', { bucket, key: 'a.txt' })).structuredContent).toMatchObject({ text: 'hi there', object: { contentType: 'text/plain; charset=utf-8' } })
    expect((await client.call('storage_get', { bucket, key: 'a.txt', encoding: 'base64' })).structuredContent).toMatchObject({ base64: Buffer.from('hi there').toString('base64') })
    expect(toolErrorOf(await client.call('storage_get', { bucket, key: 'a.txt', maxBytes: 2 }))).toMatchObject({ code: 'object_too_large' })
    expect((await client.call('storage_list', { bucket })).structuredContent!.objects).toMatchObject([{ key: 'a.txt' }])
    expect(toolErrorOf(await client.call('storage_list', { namespace: 'other' }))).toMatchObject({ code: 'forbidden' })
    expect(toolErrorOf(await client.call('storage_get', { bucket, key: 'missing' }))).toMatchObject({ code: 'NoSuchKey' })
  })
})

describe('tokens', () => {
  it('answers 401 JSON before any MCP code without a valid token', async () => {
    for (const headers of [{}, { authorization: 'Bearer forged' }, { authorization: 'Basic abc' }] as Array<Record<string, string>>) {
      for (const path of ['/mcp', '/mcp/init', '/mcp/list-tools', '/mcp/execute']) {
        const response = await fetch(`${t.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' })
        expect(response.status, `${path} ${JSON.stringify(headers)}`).toBe(401)
        expect(await response.json()).toMatchObject({ error: { code: 'unauthorized', message: expect.any(String) } })
      }
    }
    const get = await fetch(t.mcpUrl, { headers: { accept: 'text/event-stream' } })
    expect(get.status).toBe(401)
  })

  it('the v2 client without a token fails to connect', async () => {
    const client = new V2Client({ name: 'v2-test', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } })
    await expect(client.connect(new V2Transport(t.mcpUrl))).rejects.toThrow()
  })

  it('every call acts with its own token: namespaces and roles', async () => {
    const admin = await v2Client(t.mcpUrl, t.tokens.admin)
    const other = await v1Client(t.mcpUrl, t.tokens.other)
    const reader = await v2Client(t.mcpUrl, t.tokens.reader)
    try {
      const box = (await admin.call('sandbox_create', { language: 'python', namespace: 'lab' })).structuredContent!
      expect((await reader.call('sandbox_list', {})).structuredContent!.sandboxes).toEqual(expect.arrayContaining([expect.objectContaining({ id: box.id })]))
      expect(toolErrorOf(await reader.call('sandbox_run', { sandboxId: box.id, code: 'print:x' }))).toMatchObject({ code: 'forbidden' })
      expect(toolErrorOf(await other.call('sandbox_inspect', { sandboxId: box.id }))).toMatchObject({ code: 'sandbox_not_found' })
      expect((await other.call('sandbox_list', {})).structuredContent!.sandboxes).toEqual([])
      // the node admin may pull; with waitMs it reports the pull's progress until it is done
      const progress: Progress[] = []
      const job = (await admin.call('models_pull', { name: 'tiny', waitMs: 5000 }, { onprogress: (p) => progress.push(p) })).structuredContent!
      expect(job).toMatchObject({ state: 'done', bytes: 1000, totalBytes: 1000 })
      expect(progress.length).toBeGreaterThanOrEqual(1)
      expect((await reader.call('models_pull_status', { id: job.id })).structuredContent).toMatchObject({ state: 'done' })
      expect(toolErrorOf(await reader.call('models_pull_status', { id: 'nope' }))).toMatchObject({ code: 'pull_not_found' })
    } finally {
      await Promise.all([admin.close(), other.close(), reader.close()])
    }
  })
})

describe('2025-era sessions', () => {
  const post = async (token: string, sessionId: string, body: unknown, url = t.mcpUrl): Promise<Response> => await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' },
    body: JSON.stringify(body)
  })

  it('a session belongs to the token that opened it', async () => {
    const client = await v1Client(t.mcpUrl, t.tokens.writer)
    try {
      const sessionId = client.transport.sessionId!
      expect(sessionId).toMatch(/^[0-9a-f-]{36}$/)
      const own = await post(t.tokens.writer, sessionId, { jsonrpc: '2.0', id: 7, method: 'tools/list' })
      expect(own.status).toBe(200)
      expect(await own.text()).toContain('sandbox_run')
      for (const token of [t.tokens.other, t.tokens.reader, t.tokens.admin]) {
        const foreign = await post(token, sessionId, { jsonrpc: '2.0', id: 8, method: 'tools/list' })
        expect(foreign.status).toBe(404)
        expect(await foreign.json()).toMatchObject({ jsonrpc: '2.0', error: { message: 'Session not found' } })
      }
      const unknown = await post(t.tokens.writer, '00000000-0000-0000-0000-000000000000', { jsonrpc: '2.0', id: 9, method: 'tools/list' })
      expect(unknown.status).toBe(404)
    } finally {
      await client.close()
    }
  })

  it('DELETE ends a session; a request without a session that is not initialize is a 400', async () => {
    const client = await v1Client(t.mcpUrl, t.tokens.writer)
    const sessionId = client.transport.sessionId!
    await client.close()
    expect((await post(t.tokens.writer, sessionId, { jsonrpc: '2.0', id: 1, method: 'tools/list' })).status).toBe(404)
    const response = await fetch(t.mcpUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.tokens.writer}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })
    })
    expect(response.status).toBe(400)
  })

  it('idle sessions expire, sessions in use do not; closing the app closes open sessions and their streams', async () => {
    const short = await startApp({ mcp: { sessionIdleMs: 500 } })
    try {
      // a session opened by hand, with no GET stream: nothing in flight once initialize is answered
      const opened = await fetch(short.mcpUrl, {
        method: 'POST',
        headers: { authorization: `Bearer ${short.tokens.writer}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } })
      })
      expect(opened.status).toBe(200)
      await opened.text()
      const idle = opened.headers.get('mcp-session-id')!
      expect((await post(short.tokens.writer, idle, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, short.mcpUrl)).status).toBe(200)
      // the v1 client holds its GET stream open: its session is in use however long it is quiet
      const busy = await v1Client(short.mcpUrl, short.tokens.writer)
      await sleep(1800)
      expect((await post(short.tokens.writer, idle, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, short.mcpUrl)).status).toBe(404)
      expect((await busy.call('sandbox_run', { code: 'print:still here' })).structuredContent?.stdout).toBe('still here\n')
    } finally {
      // the v1 client's GET stream is still open: close must not wait for it
      const started = Date.now()
      await short.close()
      expect(Date.now() - started).toBeLessThan(3000)
    }
  })

  it('caps the sessions one token may hold', async () => {
    const capped = await startApp({ mcp: { maxSessionsPerPrincipal: 2 } })
    try {
      await v1Client(capped.mcpUrl, capped.tokens.writer)
      await v1Client(capped.mcpUrl, capped.tokens.writer)
      await expect(v1Client(capped.mcpUrl, capped.tokens.writer)).rejects.toThrow(/429|too many/)
      await v1Client(capped.mcpUrl, capped.tokens.other)
    } finally {
      await capped.close()
    }
  })
})

describe('the admin check (--api-admin-mtls)', () => {
  it('admin-only tools need it on top of the admin token, as admin routes do; other tools do not', async () => {
    const checked = await startApp({ mcp: { adminCheck: () => { throw new BkgError('client_cert_required', 403, 'admin routes need the client certificate') } } })
    try {
      const admin = await v2Client(checked.mcpUrl, checked.tokens.admin)
      expect(toolErrorOf(await admin.call('models_pull', { name: 'tiny' }))).toMatchObject({ code: 'client_cert_required' })
      expect((await admin.call('sandbox_list', {})).structuredContent).toEqual({ sandboxes: [] })
      await admin.close()
    } finally {
      await checked.close()
    }
  })
})

describe('standalone (no API auth plugin)', () => {
  it('the plugin\'s own check answers 401 and lets valid tokens through', async () => {
    const alone = await startApp({ standalone: true })
    try {
      const response = await fetch(alone.mcpUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
      expect(response.status).toBe(401)
      expect(response.headers.get('www-authenticate')).toBe('Bearer')
      expect(await response.json()).toEqual({ error: { code: 'unauthorized', message: 'missing Authorization: Bearer <token> header' } })
      const client = await v2Client(alone.mcpUrl, alone.tokens.writer)
      expect((await client.call('sandbox_run', { code: 'print:ok' })).structuredContent?.stdout).toBe('ok\n')
      await client.close()
      const v1 = await v1Client(alone.mcpUrl, alone.tokens.writer)
      expect((await v1.call('sandbox_run', { code: 'print:ok' })).structuredContent?.stdout).toBe('ok\n')
      await v1.close()
    } finally {
      await alone.close()
    }
  })
})
