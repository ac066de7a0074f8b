/**
 * The MCP plugin registered inside the real createApiServer, as node/api/server.ts will register
 * it: the API's auth hook, rate limiter, untrusted-JSON parser, error handlers and OpenAPI
 * document around it (node/api/server.ts registers it; the test registers it the same way while
 * it does not). Services other than the MCP fakes are never called here.
 */
import pino from 'pino'
import { Client as V2Client, StreamableHTTPClientTransport as V2Transport } from '@modelcontextprotocol/client'
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createApiServer, type ApiServer, type ApiServices } from '../../node/api/server.ts'
import { createNamespaceToken } from '../../node/auth/index.ts'
import { mcpRoutes } from '../../node/mcp/index.ts'
import { fakeServices } from './fakes.ts'

const keys = { adminToken: 'admin-token-0123456789abcdef', secret: 'secret-0123456789abcdef0123456789' }
const writer = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'writer', ttlMs: null }).token
let api: ApiServer
let url: string
const counted: string[] = []

beforeAll(async () => {
  const metrics = { httpRequests: { inc: (labels: { route: string, status: string }) => { counted.push(`${labels.route} ${labels.status}`) } } }
  const services = { ...fakeServices(), metrics } as unknown as ApiServices & ReturnType<typeof fakeServices>
  api = await createApiServer({ log: pino({ level: 'silent' }), keys, rateLimitPerMinute: 10_000, services, tls: null })
  // node/api/server.ts registers the plugin itself; until it does, the same registration here
  if (!api.app.hasRoute({ method: 'POST', url: '/mcp' })) {
    await api.app.register(mcpRoutes, {
      services: { sandboxes: services.sandboxes, peers: services.peers, models: services.models, events: services.events, storage: services.storage },
      principalOf: (request) => request.principal
    })
  }
  url = await api.listen('127.0.0.1:0')
})
afterAll(async () => { await api.close() })

describe('/mcp inside createApiServer', () => {
  it('401 in the API\'s shape without a token; hidden from the OpenAPI document', async () => {
    const response = await fetch(`${url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' })
    expect(response.status).toBe(401)
    expect(await response.json()).toEqual({ error: { code: 'unauthorized', message: 'missing Authorization: Bearer <token> header' } })
    const openapi = await (await fetch(`${url}/api/v1/openapi.json`)).json() as { paths: Record<string, unknown> }
    expect(Object.keys(openapi.paths).filter((path) => path.startsWith('/mcp'))).toEqual([])
  })

  it('serves both clients; hostile JSON is the API\'s 400', async () => {
    const v2 = new V2Client({ name: 'v2', version: '1' }, { versionNegotiation: { mode: 'auto' } })
    await v2.connect(new V2Transport(new URL(`${url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${writer}` } } }))
    expect((await v2.callTool({ name: 'sandbox_run', arguments: { code: 'print:api' } })).structuredContent).toMatchObject({ stdout: 'api\n' })
    await v2.close()
    const transport = new V1Transport(new URL(`${url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${writer}` } } })
    const v1 = new V1Client({ name: 'v1', version: '1' })
    await v1.connect(transport)
    expect((await v1.callTool({ name: 'sandbox_run', arguments: { code: 'print:api' } })).structuredContent).toMatchObject({ stdout: 'api\n' })
    await transport.terminateSession()
    await v1.close()
    const deep = await fetch(`${url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' }, body: '['.repeat(5000) + ']'.repeat(5000) })
    expect(deep.status).toBe(400)
    expect(await deep.json()).toMatchObject({ error: { code: 'invalid_request' } })
    expect(counted.some((line) => line.startsWith('/mcp '))).toBe(true)
  })
})
