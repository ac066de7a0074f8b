import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Principal } from '../auth/index.ts'
import type { McpEngine } from './engine.ts'
import { asJsonRpc, jsonRpcError } from './json-rpc.ts'
import type { McpCaller, McpServices } from './services.ts'

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
  // the MCP SDK is loaded by the first MCP request (engine.ts says why)
  let engine: Promise<McpEngine> | undefined
  const engineOf = async (): Promise<McpEngine> => {
    engine ??= import('./engine.ts').then(({ createMcpEngine }) => createMcpEngine(options.services, options, log))
    return await engine
  }
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
    if (engine != null) await (await engine).close()
  })

  const callerOfRequest = (request: FastifyRequest): McpCaller => {
    const caller = callers.get(request)
    if (caller == null) throw new Error('MCP request without a caller: the auth hook did not run')
    return caller
  }

  async function serve (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const caller = callerOfRequest(request)
    reply.hijack()
    try {
      await (await engineOf()).serve(request.raw, reply.raw, request.method === 'POST' ? request.body : undefined, caller)
    } catch (err) {
      log.error({ err }, 'MCP request failed')
      jsonRpcError(reply.raw, 500, -32603, 'internal error; see the node log')
    }
  }

  const route = { config: { access: 'token' as const }, schema: { hide: true } }
  app.route({ method: ['POST', 'GET', 'DELETE'], url: '/mcp', ...route, handler: serve })

  function alias (path: string, toCall: (body: Record<string, unknown>) => { method: string, params: Record<string, unknown> } | string, shape: (result: Record<string, unknown>, engine: McpEngine) => Record<string, unknown>): void {
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
      const answer = await (await engineOf()).call(target.method, target.params, callerOfRequest(request), abort.signal)
      if (jsonRpc != null) {
        return await reply.send(answer.error != null ? { jsonrpc: '2.0', id: jsonRpc.id, error: answer.error } : { jsonrpc: '2.0', id: jsonRpc.id, result: shape(answer.result ?? {}, await engineOf()) })
      }
      if (answer.error != null) return await reply.code(400).send({ error: { code: 'invalid_request', message: answer.error.message } })
      return await reply.send(shape(answer.result ?? {}, await engineOf()))
    })
  }

  alias('/mcp/init', () => ({ method: 'server/discover', params: {} }), (result, mcp) => mcp.initAnswer(result))
  alias('/mcp/list-tools', (body) => ({ method: 'tools/list', params: typeof body.cursor === 'string' ? { cursor: body.cursor } : {} }), ({ _meta: _m, resultType: _r, ttlMs: _t, cacheScope: _c, ...rest }) => rest)
  alias('/mcp/execute', (body) => {
    if (typeof body.name !== 'string' || body.name === '') return 'name: the tool to call (a string) is required'
    const args = body.arguments ?? {}
    if (typeof args !== 'object' || Array.isArray(args)) return 'arguments: must be an object'
    return { method: 'tools/call', params: { name: body.name, arguments: args } }
  }, ({ _meta: _m, resultType: _r, ...rest }) => rest)
}
