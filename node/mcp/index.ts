/**
 * The MCP server (Model Context Protocol, the official SDK's v2 packages): the node's capabilities
 * as tools for AI agents, each call made with the caller's token. Sandboxes (sandbox_run with
 * progress and cancellation, sandbox_create/list/inspect/snapshot/restore/fork/stop/delete),
 * peers_list, models_list/catalog/pull/pull_status, events_publish/query,
 * storage_list/get/put/create_bucket and llm_chat/embed/models; a tool is offered only when its service is given.
 *
 * Streamable HTTP at `/mcp` serves both protocol eras per request (2026-07-28 stateless,
 * 2025-11-25 with `Mcp-Session-Id` sessions bound to their token), plus the seed's JSON-RPC
 * aliases `POST /mcp/init`, `/mcp/list-tools`, `/mcp/execute`. The SDK itself is loaded by the
 * first MCP request (engine.ts). Tool errors are `isError` results with
 * `{"error":{"code","message"}}`, never protocol errors. stdio (`bkg mcp`) is `mcp-stdio/`.
 *
 * @example
 * import { mcpRoutes } from '../mcp/index.ts'
 *
 * // inside createApiServer (after the auth plugin): 401 without a token, before any MCP code
 * await app.register(mcpRoutes, {
 *   services: { sandboxes, peers, models, events, storage },
 *   principalOf: (request) => request.principal,
 *   adminCheck: tls?.adminCheck
 * })
 */
export { MODERN_PROTOCOL_VERSION } from './constants.ts'
export { mcpRoutes, type McpRoutesOptions } from './http.ts'
export type { McpCaller, McpServices } from './services.ts'
export { toolError } from './tool-kit.ts'
