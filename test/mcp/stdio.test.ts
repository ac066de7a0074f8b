/**
 * `bkg mcp` over stdio with both official clients: a child process (the project's node running
 * test/mcp/stdio-server.ts) serving serveMcpStdio; tools, a call with progress, a cancelled run
 * that the server sees aborted, and tool errors.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport as V1Stdio } from '@modelcontextprotocol/sdk/client/stdio.js'
import { Client as V2Client } from '@modelcontextprotocol/client'
import { StdioClientTransport as V2Stdio } from '@modelcontextprotocol/client/stdio'
import { describe, expect, it } from 'vitest'
import { sleep, toolErrorOf } from './app.ts'

const script = fileURLToPath(new URL('./stdio-server.ts', import.meta.url))
const spawnArgs = { command: process.execPath, args: [script], stderr: 'pipe' as const }

interface Progress { progress: number, message?: string }
interface ToolResult { isError?: boolean, content?: unknown, structuredContent?: Record<string, unknown> }

async function waitFor (predicate: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!predicate() && Date.now() < deadline) await sleep(20)
  return predicate()
}

describe.each([
  ['v1 client (2025-11-25)', async () => {
    const transport = new V1Stdio(spawnArgs)
    const client = new V1Client({ name: 'v1-stdio', version: '1' })
    let stderr = ''
    const connecting = client.connect(transport)
    transport.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    await connecting
    return {
      stderr: () => stderr,
      era: () => client.getServerVersion()?.name,
      listTools: async () => (await client.listTools()).tools,
      call: async (name: string, args: Record<string, unknown>, options?: { onprogress?: (p: Progress) => void, signal?: AbortSignal }) => await client.callTool({ name, arguments: args }, undefined, options) as ToolResult,
      close: async () => { await client.close() }
    }
  }],
  ['v2 client (auto → 2026-07-28)', async () => {
    const transport = new V2Stdio(spawnArgs)
    const client = new V2Client({ name: 'v2-stdio', version: '1' }, { versionNegotiation: { mode: 'auto' } })
    let stderr = ''
    const connecting = client.connect(transport)
    // the auto mode probes with a first process, kills it and starts the real one: read the last one's stderr
    const hook = setInterval(() => {
      const stream = transport.stderr as (NodeJS.ReadableStream & { hooked?: boolean }) | null
      if (stream != null && stream.hooked !== true) {
        stream.hooked = true
        stream.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
      }
    }, 5)
    await connecting
    expect(client.getProtocolEra()).toBe('modern')
    return {
      stderr: () => stderr,
      era: () => client.getServerVersion()?.name,
      listTools: async () => (await client.listTools()).tools,
      call: async (name: string, args: Record<string, unknown>, options?: { onprogress?: (p: Progress) => void, signal?: AbortSignal }) => await client.callTool({ name, arguments: args }, options) as unknown as ToolResult,
      close: async () => {
        clearInterval(hook)
        await client.close()
      }
    }
  }]
])('bkg mcp over stdio, %s', (_name, connect) => {
  it('lists tools, runs code with progress, cancels a run, answers tool errors', async () => {
    const client = await connect()
    try {
      expect(client.era()).toBe('bkg')
      const tools = await client.listTools()
      expect(tools.map((tool) => tool.name)).toEqual(expect.arrayContaining(['sandbox_run', 'sandbox_create', 'peers_list', 'models_pull', 'events_publish', 'storage_get']))
      expect(tools.find((tool) => tool.name === 'sandbox_run')?.annotations).toMatchObject({ readOnlyHint: false, openWorldHint: false })

      const progress: Progress[] = []
      const result = await client.call('sandbox_run', { code: 'sleep:200\nprint:done' }, { onprogress: (p) => progress.push(p) })
      expect(result.structuredContent).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/tick 1\n[^]*done\n$/) })
      // the last notification may lose the race with the result in the v2 client: assert on the first
      expect(progress.length).toBeGreaterThanOrEqual(1)
      expect(progress[0].message).toContain('tick')

      const controller = new AbortController()
      const call = client.call('sandbox_run', { code: 'sleep:30000' }, { signal: controller.signal, onprogress: () => {} })
      await sleep(200)
      controller.abort('stop!')
      await expect(call).rejects.toThrow()
      expect(await waitFor(() => /ABORTED quick-\d+/.test(client.stderr()), 3000)).toBe(true)

      // stdio acts as the node admin: admin-only tools work, errors stay tool errors
      expect((await client.call('models_pull', { name: 'tiny' })).structuredContent).toMatchObject({ name: 'tiny' })
      expect(toolErrorOf(await client.call('sandbox_inspect', { sandboxId: 'nope' }))).toMatchObject({ code: 'sandbox_not_found' })
      expect(toolErrorOf(await client.call('storage_list', {}))).toMatchObject({ code: 'invalid_request' })
    } finally {
      await client.close()
    }
  })
})

describe('bkg mcp lifecycle', () => {
  it('ends when the client closes stdin, telling the command (onEnd)', async () => {
    const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    expect(await waitFor(() => stderr.includes('READY'), 10_000)).toBe(true)
    child.stdin.end()
    const [code] = await once(child, 'exit') as [number | null]
    expect(code).toBe(0)
    expect(stderr).toContain('END')
  })
})
