/**
 * `bkg mcp --data DIR`: MCP over stdio in front of the running node's `/mcp`, both eras (the
 * first message decides), so a client that launches a command gets the node's own tools, with
 * progress and cancellation forwarded. The node is found on the first request (start-up is cheap:
 * a v2 client in auto mode starts the command once to probe it and kills it).
 *
 * @example
 * import { serveMcpStdioProxy } from '../../mcp-stdio/index.ts'
 *
 * const proxy = serveMcpStdioProxy({
 *   resolve: async () => await resolveTarget({ data: dir }, defaultDataDir()),   // {url, token, tls}
 *   hint: `is it running? start it with \`bkg start --data ${dir}\``
 * })
 * await proxy.ended                          // the client closed stdin
 */
export { serveMcpStdioProxy, type McpStdioProxyHandle, type McpStdioProxyOptions, type ProxyTarget, type ProxyTls } from './stdio-proxy.ts'
