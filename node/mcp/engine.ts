import type { ServerResponse } from 'node:http'
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { NodeStreamableHTTPServerTransport, toNodeHandler, toWebRequest } from '@modelcontextprotocol/node'
import {
  CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, createMcpHandler, isInitializeRequest, isLegacyRequest,
  PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY, SUPPORTED_PROTOCOL_VERSIONS, type AuthInfo, type McpServer
} from '@modelcontextprotocol/server'
import type { Logger } from 'pino'
import { whenExpired } from '../auth/index.ts'
import { DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PRINCIPAL, DEFAULT_SESSION_IDLE_MS, MODERN_PROTOCOL_VERSION } from './constants.ts'
import { jsonRpcError } from './json-rpc.ts'
import { authInfoOf, callerOf, mcpServerFactory, type McpServerFactory } from './server.ts'
import type { McpCaller, McpServices } from './services.ts'

/*
 * The part of /mcp that runs the MCP SDK. It is loaded on the first MCP request (http.ts): the
 * SDK and its HTTP adapter cost a node ~30 MiB and ~150 ms at start, which a node nobody asks
 * over MCP should not pay.
 */

export type RawRequest = IncomingMessage & { auth?: AuthInfo }

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

export interface McpEngineOptions {
  sessionIdleMs?: number
  maxSessions?: number
  maxSessionsPerPrincipal?: number
}

export interface McpEngine {
  /** one /mcp request: a 2025-era one to its session, a 2026-07-28 one to the stateless handler */
  serve: (raw: RawRequest, res: ServerResponse, body: unknown, caller: McpCaller) => Promise<void>
  /** one call to the stateless handler in-process, as a 2026-07-28 client would send it (the aliases) */
  call: (method: string, params: Record<string, unknown>, caller: McpCaller, signal: AbortSignal) => Promise<{ result?: Record<string, unknown>, error?: { code: number, message: string } }>
  /** `/mcp/init`'s answer from a `server/discover` result */
  initAnswer: (result: Record<string, unknown>) => Record<string, unknown>
  close: () => Promise<void>
}

export function createMcpEngine (services: McpServices, options: McpEngineOptions, log: Pick<Logger, 'error' | 'warn' | 'debug'>): McpEngine {
  const factory = mcpServerFactory(services, { log })
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
  return {
    async serve (raw, res, body, caller) {
      Object.assign(raw, { auth: authInfoOf(caller) })
      if (raw.method !== 'POST') return await sessions.handle(raw, res, undefined, caller)
      if (await isLegacyRequest(await toWebRequest(raw, body), body)) return await sessions.handle(raw, res, body, caller)
      await modernNode(raw, res, body)
    },
    async call (method, params, caller, signal) {
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
    },
    initAnswer (result) {
      const { _meta: meta, resultType: _resultType, ttlMs: _ttl, cacheScope: _scope, ...rest } = result
      const serverInfo = (meta as Record<string, unknown> | undefined)?.[SERVER_INFO_META_KEY]
      // /mcp serves the 2025-era revisions too (as sessions), which discover on a modern-only handler does not list
      return { protocolVersion: MODERN_PROTOCOL_VERSION, serverInfo, ...rest, supportedVersions: [MODERN_PROTOCOL_VERSION, ...SUPPORTED_PROTOCOL_VERSIONS] }
    },
    async close () {
      await Promise.all([sessions.closeAll(), modern.close()])
    }
  }
}
