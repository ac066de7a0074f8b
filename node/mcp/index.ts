/**
 * The MCP server (Model Context Protocol, the official SDK's v2 packages): the node's capabilities
 * as tools for AI agents, each call made with the caller's token. Sandboxes (sandbox_run with
 * progress and cancellation, sandbox_create/list/inspect/snapshot/restore/fork/stop/delete),
 * peers_list, models_list/catalog/pull/pull_status, events_publish/query and
 * storage_list/get/put/create_bucket; a tool is offered only when its service is given.
 *
 * Streamable HTTP at `/mcp` serves both protocol eras per request (2026-07-28 stateless,
 * 2025-11-25 with `Mcp-Session-Id` sessions bound to their token), plus the seed's JSON-RPC
 * aliases `POST /mcp/init`, `/mcp/list-tools`, `/mcp/execute`. `bkg mcp` serves stdio in front of
 * a running node's `/mcp` (serveMcpStdioProxy: the node's own tools, progress and cancellation
 * forwarded); serveMcpStdio serves the tools over stdio in-process, from services.
 * Tool errors are `isError` results with `{"error":{"code","message"}}`, never protocol errors.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { mcpRoutes, serveMcpStdio, serveMcpStdioProxy } from '../mcp/index.ts'
 *
 * // HTTP, inside createApiServer (after the auth plugin): 401 without a token, before any MCP code
 * await app.register(mcpRoutes, {
 *   services: { sandboxes, peers, models, events, storage },
 *   principalOf: (request) => request.principal,
 *   adminCheck: tls?.adminCheck
 * })
 *
 * // `bkg mcp --data DIR`: stdio in front of the running node; the node is found on the first request
 * const proxy = serveMcpStdioProxy({
 *   resolve: async () => await resolveTarget({ data: dir }, defaultDataDir()),   // {url, token, tls}
 *   hint: `is it running? start it with \`bkg start --data ${dir}\``
 * })
 * await proxy.ended                          // the client closed stdin
 *
 * // stdio in-process, from services: every call as the node admin; log to stderr (stdout is the protocol)
 * const handle = serveMcpStdio({ sandboxes, peers, models, events, storage }, adminPrincipal, {
 *   log: stderrLogger,
 *   onEnd: () => { void node.stop() }        // the client closed stdin
 * })
 * process.once('SIGTERM', () => { void handle.close() })
 *
 * // in-process (tests, benchmarks): a fresh McpServer acting as `caller`
 * const server = mcpServerFactory(services)({ principal, adminChecked: true })
 */
export { mcpRoutes, MODERN_PROTOCOL_VERSION, type McpRoutesOptions } from './http.ts'
export { mcpServerFactory, mcpTools, type McpServerFactory, type McpServerOptions } from './server.ts'
export type { McpCaller, McpServices } from './services.ts'
export { serveMcpStdio, type McpStdioOptions, type StdioServerHandle } from './stdio.ts'
export { serveMcpStdioProxy, type McpStdioProxyHandle, type McpStdioProxyOptions, type ProxyTarget, type ProxyTls } from './stdio-proxy.ts'
