/**
 * What MCP adds to a sandbox run: `tools/call sandbox_run` against calling the sandbox service
 * directly, with a service that answers at once (so only the MCP layer is measured).
 *
 *   node test/mcp/overhead-bench.ts [calls=2000]
 *
 * Rows: direct service call; in-process modern request (createMcpHandler.fetch, no socket: the
 * factory, JSON-RPC, validation, serialisation); the v2 client (2026-07-28) and the v1 client
 * (2025-11-25 session) over loopback HTTP to Fastify with the API's auth plugin. Prints p50, p99
 * and mean per call and the overhead of each over the direct call (ms), as a table and as JSON.
 */
import { Client as V2Client, StreamableHTTPClientTransport as V2Transport } from '@modelcontextprotocol/client'
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { createMcpHandler } from '@modelcontextprotocol/server'
import type { Principal } from '../../node/auth/index.ts'
import { mcpServerFactory } from '../../node/mcp/server.ts'
import type { ExecResult } from '../../node/sandbox/index.ts'
import { startApp } from './app.ts'

const calls = Number(process.argv[2] ?? 2000)
const principal: Principal = { kind: 'namespace', role: 'writer', namespace: 'lab', tokenId: 'bench', expiresAt: null }
const answer: ExecResult = { exitCode: 0, stdout: 'hello\n', stderr: '', cpuMs: 1, wallMs: 1, memoryBytes: 65536, files: {} }

async function measure (name: string, once: () => Promise<unknown>): Promise<{ name: string, p50: number, p99: number, mean: number }> {
  for (let i = 0; i < Math.min(200, calls); i++) await once() // warm-up: JIT, schemas, sockets
  const times: number[] = []
  for (let i = 0; i < calls; i++) {
    const started = performance.now()
    await once()
    times.push(performance.now() - started)
  }
  times.sort((a, b) => a - b)
  return { name, p50: times[Math.floor(times.length / 2)], p99: times[Math.floor(times.length * 0.99)], mean: times.reduce((sum, time) => sum + time, 0) / times.length }
}

const t = await startApp()
// the service answers at once: whatever the rows add is MCP
t.services.sandboxes.run = async () => answer
const rows = []

rows.push(await measure('direct SandboxService.run', async () => await t.services.sandboxes.run(principal, { code: 'print:hello', language: 'js' })))

const factory = mcpServerFactory(t.services)
const handler = createMcpHandler(({ requestInfo }) => factory({ principal, adminChecked: false }, requestInfo?.headers.get('mcp-name') ?? undefined), { legacy: 'reject' })
const envelope = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 'bench', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} }
const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'sandbox_run', arguments: { code: 'print:hello' }, _meta: envelope } })
rows.push(await measure('in-process tools/call (modern, no socket)', async () => {
  const response = await handler.fetch(new Request('http://bench/mcp', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'sandbox_run' },
    body
  }))
  const json = await response.json() as { result?: { isError?: boolean } }
  if (json.result == null || json.result.isError === true) throw new Error(`unexpected answer ${JSON.stringify(json)}`)
}))
await handler.close()

const v2 = new V2Client({ name: 'bench', version: '1' }, { versionNegotiation: { mode: 'auto' } })
await v2.connect(new V2Transport(t.mcpUrl, { requestInit: { headers: { Authorization: `Bearer ${t.tokens.writer}` } } }))
rows.push(await measure('v2 client over HTTP (2026-07-28)', async () => await v2.callTool({ name: 'sandbox_run', arguments: { code: 'print:hello' } })))
await v2.close()

const v1Transport = new V1Transport(t.mcpUrl, { requestInit: { headers: { Authorization: `Bearer ${t.tokens.writer}` } } })
const v1 = new V1Client({ name: 'bench', version: '1' })
await v1.connect(v1Transport)
rows.push(await measure('v1 client over HTTP (2025-11-25 session)', async () => await v1.callTool({ name: 'sandbox_run', arguments: { code: 'print:hello' } })))
await v1Transport.terminateSession()
await v1.close()
await t.close()

const direct = rows[0].p50
console.log(`MCP tools/call overhead, ${calls} calls each (ms)`)
console.log('| path | p50 | p99 | mean | overhead p50 |\n| --- | --- | --- | --- | --- |')
for (const row of rows) console.log(`| ${row.name} | ${row.p50.toFixed(3)} | ${row.p99.toFixed(3)} | ${row.mean.toFixed(3)} | ${(row.p50 - direct).toFixed(3)} |`)
console.log(JSON.stringify({ calls, rows: rows.map((row) => ({ ...row, overheadP50: row.p50 - direct })) }))
