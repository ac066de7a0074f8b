import { serveStdio, type ServeStdioOptions, type StdioServerHandle } from '@modelcontextprotocol/server/stdio'
import type { Logger } from 'pino'
import type { Principal } from '../auth/index.ts'
import { mcpServerFactory } from './server.ts'
import type { McpServices } from './services.ts'

export interface McpStdioOptions {
  /** log lines go to stderr (stdout is the protocol); pino's default destination is stdout, so give a logger on fd 2 */
  log?: Pick<Logger, 'error' | 'warn'>
  /** another transport than this process's stdin/stdout (tests) */
  transport?: ServeStdioOptions['transport']
  /**
   * called once when the client goes away (stdin ends or closes): the command stops what keeps
   * the process alive (a node's services), since the MCP side is done
   */
  onEnd?: () => void
}

export type { StdioServerHandle }

/**
 * Serves the MCP tools over this process's stdin/stdout (`bkg mcp --data DIR`), both protocol
 * eras (the first message decides: `initialize` is 2025-11-25, `server/discover` 2026-07-28).
 * Every call acts as `principal`: whoever can start the command holds the data dir, so it is the
 * node's operator (the admin principal, with the admin check passed). The process ends by itself
 * when stdin closes; building the server is cheap, so a client that starts the command to probe
 * it and kills it (the v2 client does, in `auto` negotiation) costs nothing but the start-up.
 */
export function serveMcpStdio (services: McpServices, principal: Principal, options: McpStdioOptions = {}): StdioServerHandle {
  const factory = mcpServerFactory(services, options.log != null ? { log: options.log } : {})
  const caller = { principal, adminChecked: true }
  if (options.onEnd != null && options.transport == null) {
    let ended = false
    const end = (): void => {
      if (ended) return
      ended = true
      options.onEnd?.()
    }
    process.stdin.once('end', end)
    process.stdin.once('close', end)
  }
  return serveStdio(() => factory(caller), {
    ...(options.transport != null ? { transport: options.transport } : {}),
    onerror: (err) => {
      if (options.log != null) options.log.warn({ err }, 'MCP stdio error')
      else process.stderr.write(`bkg mcp: ${err.message}\n`)
    }
  })
}
