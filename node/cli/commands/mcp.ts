import type { Command } from 'commander'
import { defaultDataDir } from '../../identity/index.ts'
import { serveMcpStdioProxy } from '../../mcp-stdio/index.ts'
import { CliError, EXIT } from '../errors.ts'
import { resolveTarget } from '../node-client.ts'

interface McpFlags { data: string, api?: string, token?: string }

/** after stdin ended and everything was closed, the process ends by itself; this is the backstop */
const EXIT_BACKSTOP_MS = 2000

/**
 * `bkg mcp --data DIR [--api URL --token T]`: MCP over stdio for clients that launch a command,
 * in front of the running node's `/mcp`: the same tools, each call made with the data dir's
 * admin token (or --token). Nothing is read or connected before the first request; the command
 * ends when its stdin closes. Logs go to stderr: stdout is the protocol.
 */
export function registerMcpCommand (program: Command): void {
  program
    .command('mcp')
    .description('serve the running node\'s MCP tools over stdio (for MCP clients that launch a command); calls act with the data dir\'s admin token or --token')
    .option('--data <dir>', 'data dir of the running node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of the data dir\'s api.json')
    .option('--token <token>', 'API token instead of the data dir\'s admin token (a namespace token reaches only its namespace)')
    .action(async (flags: McpFlags) => {
      if (flags.api != null) {
        let url: URL | null = null
        try {
          url = new URL(flags.api)
        } catch {}
        if (url == null || !['http:', 'https:'].includes(url.protocol)) throw new CliError(`--api must be an http:// or https:// URL, not "${flags.api}"`, EXIT.usage)
      }
      const hint = flags.api != null ? 'is it running at that address?' : `is it running? start it with \`bkg start --data ${flags.data}\``
      const proxy = serveMcpStdioProxy({
        resolve: async () => await resolveTarget(flags, defaultDataDir()),
        hint
      })
      process.once('SIGTERM', () => { void proxy.close() })
      await proxy.ended
      setTimeout(() => process.exit(EXIT.ok), EXIT_BACKSTOP_MS).unref()
    })
}
