/**
 * `bkg mcp --data DIR` as an MCP client launches it: the real CLI over stdio in front of a real
 * node's /mcp, with both official clients (v1 SDK 1.32: 2025-11-25; v2 client in `auto`
 * negotiation: 2026-07-28). The node's tools and schemas, a run in the node's sandboxes, progress
 * while it runs, a cancelled endless loop, no running node (a tool error, no crash), HTTPS with
 * the pinned PeerId, bad flags, and the end of stdin.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport as V1Stdio } from '@modelcontextprotocol/sdk/client/stdio.js'
import { Client as V2Client } from '@modelcontextprotocol/client'
import { StdioClientTransport as V2Stdio } from '@modelcontextprotocol/client/stdio'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI_ENTRY } from '../../node/devnet/index.ts'
import { cliEnv, expectCleanFailure, runBkg } from '../helpers/cli.ts'
import { tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'
import { toolErrorOf } from './app.ts'

interface Progress { progress: number, total?: number, message?: string }
interface ToolResult { isError?: boolean, content?: unknown, structuredContent?: Record<string, unknown> }
interface Tool { name: string, inputSchema: { properties?: Record<string, { type?: string }>, required?: string[] }, annotations?: Record<string, unknown> }
type CallOptions = { onprogress?: (p: Progress) => void, signal?: AbortSignal }

interface StdioSession {
  stderr: () => string
  listTools: () => Promise<Tool[]>
  call: (name: string, args: Record<string, unknown>, options?: CallOptions) => Promise<ToolResult>
  close: () => Promise<void>
}

let tmp: Awaited<ReturnType<typeof tempDir>>
let mesh: TestMesh
let node: TestNode

function bkgMcp (args: string[]): { command: string, args: string[], env: Record<string, string>, stderr: 'pipe' } {
  const env = Object.fromEntries(Object.entries(cliEnv(tmp.dir)).filter((entry): entry is [string, string] => entry[1] != null))
  return { command: process.execPath, args: [CLI_ENTRY, 'mcp', ...args], env, stderr: 'pipe' }
}

async function v1Session (args: string[]): Promise<StdioSession> {
  const transport = new V1Stdio(bkgMcp(args))
  const client = new V1Client({ name: 'v1-stdio', version: '1' })
  let stderr = ''
  const connecting = client.connect(transport)
  transport.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  await connecting
  expect(client.getServerVersion()?.name).toBe('bkg')
  return {
    stderr: () => stderr,
    listTools: async () => (await client.listTools()).tools as Tool[],
    call: async (name, args, options) => await client.callTool({ name, arguments: args }, undefined, options) as ToolResult,
    close: async () => { await client.close() }
  }
}

async function v2Session (args: string[]): Promise<StdioSession> {
  const transport = new V2Stdio(bkgMcp(args))
  const client = new V2Client({ name: 'v2-stdio', version: '1' }, { versionNegotiation: { mode: 'auto' } })
  let stderr = ''
  const connecting = client.connect(transport)
  // auto negotiation probes with a first process, kills it and starts the real one: read the last one's stderr
  const hook = setInterval(() => {
    const stream = transport.stderr as (NodeJS.ReadableStream & { hooked?: boolean }) | null
    if (stream != null && stream.hooked !== true) {
      stream.hooked = true
      stream.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    }
  }, 5)
  await connecting
  expect(client.getProtocolEra()).toBe('modern')
  expect(client.getServerVersion()?.name).toBe('bkg')
  return {
    stderr: () => stderr,
    listTools: async () => (await client.listTools()).tools as unknown as Tool[],
    call: async (name, args, options) => await client.callTool({ name, arguments: args }, options) as unknown as ToolResult,
    close: async () => {
      clearInterval(hook)
      await client.close()
    }
  }
}

async function health (target: TestNode): Promise<number> {
  const started = Date.now()
  const { status } = await target.api('GET', '/api/v1/health')
  expect(status).toBe(200)
  return Date.now() - started
}

beforeAll(async () => {
  tmp = await tempDir('bkg-mcp-proxy-test-')
  mesh = await TestMesh.create(tmp.dir)
  node = await mesh.addNode('a', { namespaces: ['lab'] })
  await node.start()
}, 60_000)

afterAll(async () => {
  await mesh?.stopAll()
  await tmp?.remove()
})

describe.each([
  ['v1 client (2025-11-25)', v1Session],
  ['v2 client (auto → 2026-07-28)', v2Session]
])('bkg mcp --data DIR, %s', (_name, connect) => {
  it('serves the node\'s tools: a run in its sandboxes, progress, a cancelled endless loop', async () => {
    const session = await connect(['--data', node.paths.dir])
    try {
      const tools = await session.listTools()
      expect(tools.map((tool) => tool.name)).toEqual(expect.arrayContaining(['sandbox_run', 'sandbox_create', 'peers_list', 'models_list', 'events_publish', 'storage_get']))
      const run = tools.find((tool) => tool.name === 'sandbox_run')
      expect(run?.inputSchema.properties).toMatchObject({ code: { type: 'string' }, language: { type: 'string' }, timeoutMs: { type: 'integer' } })
      expect(run?.inputSchema.required).toEqual(['code'])
      expect(run?.annotations).toMatchObject({ readOnlyHint: false, openWorldHint: false })

      const answer = await session.call('sandbox_run', { code: 'console.log(6*7)' })
      expect(answer.isError ?? false).toBe(false)
      expect(answer.structuredContent).toMatchObject({ exitCode: 0, stdout: '42\n' })

      // prints for about a second: output chunks (or the heartbeat) come as progress
      const progress: Progress[] = []
      const ticking = 'const t0 = Date.now(); let n = 0; while (Date.now() - t0 < 1200) { if (Date.now() - t0 >= n * 200) console.log("tick " + n++) }'
      const ticked = await session.call('sandbox_run', { code: ticking }, { onprogress: (p) => progress.push(p) })
      expect(ticked.structuredContent).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/^tick 0\ntick 1\n[^]*tick 5\n/) })
      // the last notification may lose the race with the result in the v2 client: assert on the first ones
      expect(progress.length).toBeGreaterThanOrEqual(1)
      expect(progress[0].message).toMatch(/tick|running/)

      // cancelled 300 ms in: the call ends at once, the node's run is stopped, the node keeps serving
      const controller = new AbortController()
      const started = Date.now()
      const endless = session.call('sandbox_run', { code: 'while(true){}', timeoutMs: 20_000, policy: { timeoutMs: 20_000 } }, { signal: controller.signal, onprogress: () => {} })
      setTimeout(() => controller.abort('stop!'), 300)
      await expect(endless).rejects.toThrow(/stop!|abort|cancel/i)
      expect(Date.now() - started).toBeLessThan(3000)
      expect(await health(node)).toBeLessThan(1000)
      // the worker came back: another run works at once
      expect((await session.call('sandbox_run', { code: 'console.log("after")' })).structuredContent).toMatchObject({ stdout: 'after\n' })

      // the cancel reaches the node: a persistent sandbox's endless run is running, then no longer
      const sandbox = (await session.call('sandbox_create', { language: 'js', policy: { timeoutMs: 20_000 } })).structuredContent as { id: string }
      const stateOf = async (): Promise<unknown> => (await session.call('sandbox_inspect', { sandboxId: sandbox.id })).structuredContent?.state
      const stopper = new AbortController()
      const looping = session.call('sandbox_run', { sandboxId: sandbox.id, code: 'while(true){}' }, { signal: stopper.signal })
      looping.catch(() => {})
      await waitFor('the run to start', async () => await stateOf() === 'running', 5000, 50)
      stopper.abort('stop!')
      await expect(looping).rejects.toThrow(/stop!|abort|cancel/i)
      await waitFor('the run to end on the node', async () => await stateOf() !== 'running', 3000, 50)
      await session.call('sandbox_delete', { sandboxId: sandbox.id })

      // the node's tool errors come through unchanged
      expect(toolErrorOf(await session.call('sandbox_inspect', { sandboxId: 'nope' }))).toMatchObject({ code: 'sandbox_not_found' })
      expect(session.stderr()).toContain('connected to the node at')
    } finally {
      await session.close()
    }
  })
})

describe('bkg mcp without a running node', () => {
  it('answers a tool call with an error that says to start the node, and keeps serving', async () => {
    const dir = join(tmp.dir, 'not-started')
    for (const connect of [v1Session, v2Session]) {
      const session = await connect(['--data', dir])
      try {
        for (let i = 0; i < 2; i++) {
          const error = toolErrorOf(await session.call('sandbox_run', { code: 'console.log(1)' }))
          expect(error?.code).toBe('node_unreachable')
          expect(error?.message).toContain(`bkg start --data ${dir}`)
        }
        // tools/list has nothing to list: a JSON-RPC error with the same advice
        await expect(session.listTools()).rejects.toThrow(/bkg start --data/)
        expect(session.stderr()).toMatch(/^bkg mcp: .*no running node found/m)
      } finally {
        await session.close()
      }
    }
  })

  it('says the same when the data dir names a node that is gone (a stale api.json after kill -9)', async () => {
    const dir = join(tmp.dir, 'crashed')
    await mkdir(dir, { recursive: true })
    const closed = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo
        server.close(() => resolve(port))
      })
    })
    await writeFile(join(dir, 'api.json'), JSON.stringify({ url: `http://127.0.0.1:${closed}`, pid: 1, peerId: 'x' }))
    await writeFile(join(dir, 'api-token'), 'some-token\n')
    const session = await v2Session(['--data', dir])
    try {
      const error = toolErrorOf(await session.call('sandbox_run', { code: 'console.log(1)' }))
      expect(error?.code).toBe('node_unreachable')
      expect(error?.message).toMatch(new RegExp(`cannot reach the node at http://127.0.0.1:${closed}: .*ECONNREFUSED.*start it with \`bkg start --data ${dir}\``))
    } finally {
      await session.close()
    }
  })
})

describe('bkg mcp and the node\'s API', () => {
  it('reaches an HTTPS node by its pinned PeerId, as the CLI does', async () => {
    const secure = await mesh.addNode('tls', { namespaces: ['lab'], sans: ['IP:127.0.0.1'] })
    await secure.start(['--api-tls'])
    try {
      expect(secure.url).toMatch(/^https:/)
      const session = await v2Session(['--data', secure.paths.dir])
      try {
        expect((await session.call('sandbox_run', { code: 'console.log(6*7)' })).structuredContent).toMatchObject({ exitCode: 0, stdout: '42\n' })
      } finally {
        await session.close()
      }
    } finally {
      await secure.stop()
    }
  })

  it('answers a refused token as a tool error', async () => {
    const session = await v1Session(['--data', node.paths.dir, '--token', 'not-a-token'])
    try {
      expect(toolErrorOf(await session.call('sandbox_run', { code: 'console.log(1)' }))?.code).toBe('unauthorized')
    } finally {
      await session.close()
    }
  })

  it('finds the node again after it stopped and came back on another port', async () => {
    const session = await v2Session(['--data', node.paths.dir])
    try {
      expect((await session.call('sandbox_run', { code: 'console.log(1)' })).structuredContent).toMatchObject({ stdout: '1\n' })
      const before = node.url
      await node.stop()
      const error = toolErrorOf(await session.call('sandbox_run', { code: 'console.log(2)' }))
      expect(error?.code).toBe('node_unreachable')
      expect(error?.message).toContain('bkg start --data')
      await node.start()
      expect(node.url).not.toBe(before)
      expect((await session.call('sandbox_run', { code: 'console.log(3)' })).structuredContent).toMatchObject({ stdout: '3\n' })
    } finally {
      await session.close()
    }
  })
})

describe('bkg mcp, the process', () => {
  it('ends with 0 when stdin closes', async () => {
    const child = spawn(process.execPath, [CLI_ENTRY, 'mcp', '--data', node.paths.dir], { env: cliEnv(tmp.dir), stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
    child.stdin.end()
    const [code] = await once(child, 'exit') as [number | null]
    expect(code).toBe(0)
    expect(stdout).toBe('')
  })

  it('refuses bad flags with a usage error (exit 2)', async () => {
    expectCleanFailure(await runBkg(['mcp', '--bogus'], tmp.dir), /unknown option '--bogus'/, { exitCode: 2, singleLine: true })
    expectCleanFailure(await runBkg(['mcp', '--api', 'ftp://example.org'], tmp.dir), /--api must be an http/, { exitCode: 2, singleLine: true })
    expectCleanFailure(await runBkg(['mcp', 'extra'], tmp.dir), /too many arguments/, { exitCode: 2, singleLine: true })
  })
})
