import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { NodeStreamableHTTPServerTransport, toNodeHandler, toWebRequest } from '@modelcontextprotocol/node'
import {
  CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, createMcpHandler, isInitializeRequest, isLegacyRequest,
  PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY, SUPPORTED_PROTOCOL_VERSIONS, type AuthInfo, type McpServer
} from '@modelcontextprotocol/server'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { whenExpired, type Principal } from '../auth/index.ts'
import { DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PRINCIPAL, DEFAULT_SESSION_IDLE_MS } from './constants.ts'
import { authInfoOf, callerOf, mcpServerFactory, type McpServerFactory } from './server.ts'
import type { McpCaller, McpServices } from './services.ts'

/** the stateless revision served per request; 2025-era clients get sessions instead */
export const MODERN_PROTOCOL_VERSION = '2026-07-28'

export interface McpRoutesOptions {
  services: McpServices
  /**
   * The principal of a request's bearer token, or null (no token, or a forged or expired one):
   * the API's own check. Runs in `preParsing`, after the API's auth hook, so inside
   * createApiServer `(request) => request.principal` is enough.
   */
  principalOf: (request: FastifyRequest) => Principal | null
  /** the API's extra check for admin routes (`--api-admin-mtls`); admin-only tools need it to pass */
  adminCheck?: ((request: FastifyRequest) => void) | null
  log?: Pick<Logger, 'error' | 'warn' | 'debug'>
  /** a 2025-era session idle this long is closed (default 10 min) */
  sessionIdleMs?: number
  maxSessions?: number
  maxSessionsPerPrincipal?: number
}

type RawRequest = IncomingMessage & { auth?: AuthInfo }

interface Session {
  id: string
  transport: NodeStreamableHTTPServerTransport
  server: McpServer
  /** the token that opened it: only that token may use it */
  owner: string
  lastSeen: number
  /** requests (POSTs, the GET stream) still being answered */
  active: number
  cancelExpiry: () => void
}

function jsonRpcError (res: ServerResponse, status: number, code: number, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end()
    return
  }
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }))
}

/**
 * The 2025-11-25 era, sessionful: `initialize` opens a session (its `Mcp-Session-Id` is a random
 * UUID) with one McpServer for its lifetime, so `notifications/cancelled` reaches the running
 * call and GET opens the session's SSE stream. A session belongs to the token that opened it
 * (another token gets 404, as for an unknown id), ends with DELETE, with its token's expiry, after
 * `idleMs` without requests, or when the plugin closes.
 */
class LegacySessions {
  private readonly sessions = new Map<string, Session>()
  private readonly sweeper: NodeJS.Timeout
  private readonly factory: McpServerFactory
  private readonly options: { idleMs: number, max: number, maxPerPrincipal: number, log?: Pick<Logger, 'debug' | 'warn'> }

  constructor (factory: McpServerFactory, options: LegacySessions['options']) {
    this.factory = factory
    this.options = options
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, Math.min(options.idleMs / 2, 60_000)))
    this.sweeper.unref()
  }

  get size (): number {
    return this.sessions.size
  }

  async handle (raw: RawRequest, res: ServerResponse, body: unknown, caller: McpCaller): Promise<void> {
    const header = raw.headers['mcp-session-id']
    if (Array.isArray(header)) return jsonRpcError(res, 400, -32600, 'Bad Request: one Mcp-Session-Id header')
    if (header != null) {
      const session = this.sessions.get(header)
      // another token's session is answered as an unknown one: its id tells the caller nothing
      if (session == null || session.owner !== caller.principal.tokenId) return jsonRpcError(res, 404, -32001, 'Session not found')
      session.lastSeen = Date.now()
      session.active++
      res.once('close', () => {
        session.active--
        session.lastSeen = Date.now()
      })
      return await session.transport.handleRequest(raw, res, body)
    }
    if (raw.method !== 'POST' || !isInitializeRequest(body)) {
      return jsonRpcError(res, 400, -32600, 'Bad Request: no Mcp-Session-Id; a 2025-era client opens a session with initialize')
    }
    const owner = caller.principal.tokenId
    let owned = 0
    for (const session of this.sessions.values()) if (session.owner === owner) owned++
    if (owned >= this.options.maxPerPrincipal || this.sessions.size >= this.options.max) {
      return jsonRpcError(res, 429, -32000, `too many open MCP sessions (${owned >= this.options.maxPerPrincipal ? `${owned} for this token` : `${this.sessions.size} on the node`}); end one with DELETE /mcp or wait for idle ones to expire`)
    }
    const server = this.factory(caller)
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        const session: Session = {
          id,
          transport,
          server,
          owner,
          lastSeen: Date.now(),
          active: 0,
          cancelExpiry: whenExpired(caller.principal, () => { void this.close(id, 'token expired') })
        }
        this.sessions.set(id, session)
      },
      onsessionclosed: (id) => { this.forget(id) }
    })
    transport.onclose = () => { if (transport.sessionId != null) this.forget(transport.sessionId) }
    await server.connect(transport)
    await transport.handleRequest(raw, res, body)
    // an initialize the transport refused opened no session: nothing else will close this server
    if (transport.sessionId == null || !this.sessions.has(transport.sessionId)) await server.close().catch(() => {})
  }

  private forget (id: string): void {
    const session = this.sessions.get(id)
    if (session == null) return
    this.sessions.delete(id)
    session.cancelExpiry()
  }

  async close (id: string, why: string): Promise<void> {
    const session = this.sessions.get(id)
    if (session == null) return
    this.forget(id)
    this.options.log?.debug({ session: id, why }, 'MCP session closed')
    await session.server.close().catch((err: unknown) => { this.options.log?.warn({ err, session: id }, 'closing an MCP session failed') })
  }

  private sweep (): void {
    const now = Date.now()
    for (const session of this.sessions.values()) {
      if (session.active === 0 && now - session.lastSeen > this.options.idleMs) void this.close(session.id, 'idle')
    }
  }

  async closeAll (): Promise<void> {
    clearInterval(this.sweeper)
    await Promise.all([...this.sessions.keys()].map(async (id) => { await this.close(id, 'shutdown') }))
  }
}

/** the per-request `_meta` envelope of a modern request the aliases synthesize */
const ALIAS_ENVELOPE = {
  [PROTOCOL_VERSION_META_KEY]: MODERN_PROTOCOL_VERSION,
  [CLIENT_INFO_META_KEY]: { name: 'bkg-jsonrpc-alias', version: '1' },
  [CLIENT_CAPABILITIES_META_KEY]: {}
}

interface JsonRpcRequestLike { jsonrpc: '2.0', id: string | number | null, params?: unknown }

function asJsonRpc (body: unknown): JsonRpcRequestLike | null {
  if (body == null || typeof body !== 'object' || Array.isArray(body)) return null
  const record = body as Record<string, unknown>
  if (record.jsonrpc !== '2.0' || !('id' in record)) return null
  const id = record.id
  return { jsonrpc: '2.0', id: typeof id === 'string' || typeof id === 'number' ? id : null, params: record.params }
}

/**
 * MCP over Streamable HTTP at `/mcp` (POST, GET, DELETE), both protocol eras per request:
 * 2026-07-28 stateless (`createMcpHandler` with `legacy: 'reject'`: one McpServer per request;
 * closing the request's stream cancels its call) and 2025-11-25 sessionful (`LegacySessions`).
 * A request without a valid token is answered 401 `{error:{code,message}}` before any MCP code
 * runs. Also the seed's JSON-RPC paths as thin aliases over the same server: `POST /mcp/init`,
 * `POST /mcp/list-tools`, `POST /mcp/execute`. Hidden from the OpenAPI document.
 */
export const mcpRoutes: FastifyPluginAsync<McpRoutesOptions> = async (app, options) => {
  const log = options.log ?? app.log
  const factory = mcpServerFactory(options.services, { log })
  // a modern tools/call names its tool in Mcp-Name, which the handler checks against the body
  const fromContext = ({ authInfo, requestInfo }: { authInfo?: AuthInfo, requestInfo?: Request }): McpServer =>
    factory(callerOf(authInfo), requestInfo?.headers.get('mcp-method') === 'tools/call' ? requestInfo.headers.get('mcp-name') ?? undefined : undefined)
  const onerror = (err: Error): void => { log.debug({ err }, 'MCP request failed') }
  const modern = createMcpHandler(fromContext, { legacy: 'reject', onerror })
  const modernNode = toNodeHandler(modern, { onerror })
  const sessions = new LegacySessions(factory, {
    idleMs: options.sessionIdleMs ?? DEFAULT_SESSION_IDLE_MS,
    max: options.maxSessions ?? DEFAULT_MAX_SESSIONS,
    maxPerPrincipal: options.maxSessionsPerPrincipal ?? DEFAULT_MAX_SESSIONS_PER_PRINCIPAL,
    log
  })
  const callers = new WeakMap<FastifyRequest, McpCaller>()

  // before the body is read; inside createApiServer the API's own auth hook has already run
  app.addHook('preParsing', async (request, reply) => {
    const principal = options.principalOf(request)
    if (principal == null) {
      const message = request.headers.authorization == null ? 'missing Authorization: Bearer <token> header' : 'invalid or expired token'
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: { code: 'unauthorized', message } })
      return
    }
    let adminChecked = false
    if (principal.kind === 'node-admin') {
      try {
        options.adminCheck?.(request)
        adminChecked = true
      } catch {
        // the token still counts as the node admin's for everything but admin-only tools
      }
    }
    callers.set(request, { principal, adminChecked })
  })
  app.addHook('preClose', async () => {
    await Promise.all([sessions.closeAll(), modern.close()])
  })

  const callerOfRequest = (request: FastifyRequest): McpCaller => {
    const caller = callers.get(request)
    if (caller == null) throw new Error('MCP request without a caller: the auth hook did not run')
    return caller
  }

  async function serve (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const caller = callerOfRequest(request)
    reply.hijack()
    const raw: RawRequest = Object.assign(request.raw, { auth: authInfoOf(caller) })
    const res = reply.raw
    try {
      if (request.method !== 'POST') return await sessions.handle(raw, res, undefined, caller)
      if (await isLegacyRequest(await toWebRequest(raw, request.body), request.body)) return await sessions.handle(raw, res, request.body, caller)
      await modernNode(raw, res, request.body)
    } catch (err) {
      log.error({ err }, 'MCP request failed')
      jsonRpcError(res, 500, -32603, 'internal error; see the node log')
    }
  }

  const route = { config: { access: 'token' as const }, schema: { hide: true } }
  app.route({ method: ['POST', 'GET', 'DELETE'], url: '/mcp', ...route, handler: serve })

  /** one request to the modern handler in-process, as a 2026-07-28 client would send it */
  async function call (method: string, params: Record<string, unknown>, caller: McpCaller, signal: AbortSignal): Promise<{ result?: Record<string, unknown>, error?: { code: number, message: string } }> {
    const name = typeof params.name === 'string' ? params.name : undefined
    const request = new Request('http://bkg.invalid/mcp', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': MODERN_PROTOCOL_VERSION,
        'mcp-method': method,
        ...(name != null ? { 'mcp-name': name } : {})
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: { ...params, _meta: ALIAS_ENVELOPE } }),
      signal
    })
    const response = await modern.fetch(request, { authInfo: authInfoOf(caller) })
    const text = await response.text()
    // no progressToken is sent, so the answer is JSON; should a notification ever switch it to
    // SSE, the response is the message with the request's id
    const messages = (response.headers.get('content-type') ?? '').startsWith('text/event-stream')
      ? text.split('\n').filter((line) => line.startsWith('data:')).map((line) => line.slice(5).trim())
      : [text]
    for (const message of messages) {
      try {
        const parsed = JSON.parse(message) as { id?: unknown, result?: Record<string, unknown>, error?: { code: number, message: string } }
        if (parsed.id === 1 || parsed.id === null) return parsed
      } catch {}
    }
    return { error: { code: -32603, message: `the MCP handler answered ${response.status}` } }
  }

  function alias (path: string, toCall: (body: Record<string, unknown>) => { method: string, params: Record<string, unknown> } | string, shape: (result: Record<string, unknown>) => Record<string, unknown>): void {
    app.post(path, route, async (request, reply) => {
      const jsonRpc = asJsonRpc(request.body)
      const body = (jsonRpc != null ? jsonRpc.params : request.body) ?? {}
      const target = body != null && typeof body === 'object' && !Array.isArray(body) ? toCall(body as Record<string, unknown>) : 'the body must be a JSON object'
      if (typeof target === 'string') {
        if (jsonRpc != null) return await reply.send({ jsonrpc: '2.0', id: jsonRpc.id, error: { code: -32602, message: target } })
        return await reply.code(400).send({ error: { code: 'invalid_request', message: target } })
      }
      // the caller hanging up cancels the call, as closing a modern request's stream does
      const abort = new AbortController()
      reply.raw.once('close', () => { if (!reply.raw.writableFinished) abort.abort() })
      const answer = await call(target.method, target.params, callerOfRequest(request), abort.signal)
      if (jsonRpc != null) {
        return await reply.send(answer.error != null ? { jsonrpc: '2.0', id: jsonRpc.id, error: answer.error } : { jsonrpc: '2.0', id: jsonRpc.id, result: shape(answer.result ?? {}) })
      }
      if (answer.error != null) return await reply.code(400).send({ error: { code: 'invalid_request', message: answer.error.message } })
      return await reply.send(shape(answer.result ?? {}))
    })
  }

  alias('/mcp/init', () => ({ method: 'server/discover', params: {} }), (result) => {
    const { _meta: meta, resultType: _resultType, ttlMs: _ttl, cacheScope: _scope, ...rest } = result
    const serverInfo = (meta as Record<string, unknown> | undefined)?.[SERVER_INFO_META_KEY]
    // /mcp serves the 2025-era revisions too (as sessions), which discover on a modern-only handler does not list
    return { protocolVersion: MODERN_PROTOCOL_VERSION, serverInfo, ...rest, supportedVersions: [MODERN_PROTOCOL_VERSION, ...SUPPORTED_PROTOCOL_VERSIONS] }
  })
  alias('/mcp/list-tools', (body) => ({ method: 'tools/list', params: typeof body.cursor === 'string' ? { cursor: body.cursor } : {} }), ({ _meta: _m, resultType: _r, ttlMs: _t, cacheScope: _c, ...rest }) => rest)
  alias('/mcp/execute', (body) => {
    if (typeof body.name !== 'string' || body.name === '') return 'name: the tool to call (a string) is required'
    const args = body.arguments ?? {}
    if (typeof args !== 'object' || Array.isArray(args)) return 'arguments: must be an object'
    return { method: 'tools/call', params: { name: body.name, arguments: args } }
  }, ({ _meta: _m, resultType: _r, ...rest }) => rest)
}
