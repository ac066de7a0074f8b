import { McpServer, type AuthInfo, type ServerContext } from '@modelcontextprotocol/server'
import type { Logger } from 'pino'
import { BkgError } from '../../lib/bkg-error.ts'
import { VERSION } from '../version.ts'
import { llmTools } from './llm-tools.ts'
import { eventTools, modelTools, peerTools, storageTools } from './node-tools.ts'
import { sandboxTools } from './sandbox-tools.ts'
import type { McpCaller, McpServices } from './services.ts'
import { registerTools, type ToolDefinition } from './tool-kit.ts'

export interface McpServerOptions {
  /** where tool failures that are bugs (not BkgErrors) are logged */
  log?: Pick<Logger, 'error' | 'warn'>
}

/**
 * builds a fresh McpServer with every tool, for one request (modern HTTP), session (2025 HTTP) or
 * connection (stdio); `only` (a modern `tools/call`'s `Mcp-Name`) registers just that tool, when it exists
 */
export type McpServerFactory = (caller: McpCaller | null, only?: string) => McpServer

const INSTRUCTIONS = 'Tools of a BKG mesh node: sandbox_* run untrusted code in WebAssembly sandboxes (quick runs, or persistent sandboxes with snapshots, restore and fork); ' +
  'peers_list, models_*, events_* and storage_* reach the node\'s peers, models, signed events and object storage; llm_* chat with and embed text by language models here or on peers. Every call acts with the caller\'s token. ' +
  'Tool errors come as isError results whose text is {"error":{"code","message"}}.'

/** The tools the given services support (tool definitions and their schemas are built once, servers per request). */
export function mcpTools (services: McpServices): ToolDefinition[] {
  return [
    ...(services.sandboxes != null ? sandboxTools(services.sandboxes) : []),
    ...(services.peers != null ? peerTools(services.peers) : []),
    ...(services.models != null ? modelTools(services.models) : []),
    ...(services.events != null ? eventTools(services.events) : []),
    ...(services.storage != null ? storageTools(services.storage) : []),
    ...(services.llm != null ? llmTools(services.llm) : [])
  ]
}

const CALLER = 'bkg.caller'

/** The AuthInfo the MCP SDK passes through to tools: the principal, never the bearer token itself. */
export function authInfoOf (caller: McpCaller): AuthInfo {
  const { principal } = caller
  return {
    token: principal.tokenId,
    clientId: principal.tokenId,
    scopes: [principal.role],
    ...(principal.expiresAt != null ? { expiresAt: Math.floor(principal.expiresAt / 1000) } : {}),
    extra: { [CALLER]: caller }
  }
}

export function callerOf (authInfo: AuthInfo | undefined): McpCaller | null {
  const caller = authInfo?.extra?.[CALLER] as McpCaller | undefined
  return caller?.principal != null ? caller : null
}

/**
 * `mcpServerFactory(services)(caller)`: an McpServer whose tools call the services as `caller`.
 * Building one is cheap (the tools' schemas are shared), so HTTP builds one per request.
 * Each call takes its caller from the request when the transport gives one (HTTP: the request's
 * own token, checked against the session's), else the one the server was built for (stdio).
 */
export function mcpServerFactory (services: McpServices, options: McpServerOptions = {}): McpServerFactory {
  const tools = mcpTools(services)
  const byName = new Map(tools.map((tool) => [tool.name, [tool]]))
  return (bound, only) => {
    const server = new McpServer({ name: 'bkg', title: 'BKG node', version: VERSION }, { capabilities: { tools: { listChanged: false } }, instructions: INSTRUCTIONS })
    const caller = (ctx: ServerContext): McpCaller => {
      const current = callerOf(ctx.http?.authInfo) ?? bound
      if (current == null) throw new BkgError('unauthorized', 401, 'no caller: the request carried no token')
      return current
    }
    // a request that calls one tool needs no other: a third of the per-request cost (measured)
    registerTools(server, (only != null ? byName.get(only) : undefined) ?? tools, caller, options.log)
    return server
  }
}
