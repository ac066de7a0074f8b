/**
 * The MCP plugin registered inside the real createApiServer, as node/api/server.ts will register
 * it: the API's auth hook, rate limiter, untrusted-JSON parser, error handlers and OpenAPI
 * document around it. Services other than the MCP fakes are never called here.
 */
import pino from 'pino'
import { Client as V2Client, StreamableHTTPClientTransport as V2Transport } from '@modelcontextprotocol/client'
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { FastifyRequest } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createApiServer, type ApiServer, type ApiServices } from '../../node/api/server.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { createNamespaceToken } from '../../node/auth/index.ts'
import { mcpRoutes } from '../../node/mcp/index.ts'
import { fakeServices } from './fakes.ts'
import { toolErrorOf } from './app.ts'

const keys = { adminToken: 'admin-token-0123456789abcdef', secret: 'secret-0123456789abcdef0123456789' }
const writer = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'writer', ttlMs: null }).token
let api: ApiServer
let url: string
const counted: string[] = []

beforeAll(async () => {
  const services = { metrics: { httpRequests: { inc: (labels: { route: string, status: string }) => { counted.push(`${labels.route} ${labels.status}`) } } } } as unknown as ApiServices
  // as --api-admin-mtls would: admin routes also want a client certificate, which no test client has
  const adminCheck = (_request: FastifyRequest): void => { throw new BkgError('client_cert_required', 403, 'admin routes need the client certificate') }
  api = await createApiServer({ log: pino({ level: 'silent' }), keys, rateLimitPerMinute: 10_000, services, tls: null })
  // the lines node/api/server.ts adds (with the real services and init.tls?.adminCheck)
  await api.app.register(mcpRoutes, { services: fakeServices(), principalOf: (request) => request.principal, adminCheck })
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

  it('admin-only tools need the admin check too, as admin routes do', async () => {
    const response = await fetch(`${url}/mcp/execute`, { method: 'POST', headers: { authorization: `Bearer ${keys.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'models_pull', arguments: { name: 'tiny' } }) })
    expect(toolErrorOf(await response.json() as { isError?: boolean, content?: unknown })).toMatchObject({ code: 'client_cert_required' })
    // everything else the admin token may do still works
    const list = await fetch(`${url}/mcp/execute`, { method: 'POST', headers: { authorization: `Bearer ${keys.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'sandbox_list', arguments: {} }) })
    expect(await list.json()).toMatchObject({ structuredContent: { sandboxes: [] } })
  })
})
