import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import WebSocket from 'ws'
import { runBkg } from '../helpers/cli.ts'
import { createToken } from '../helpers/events.ts'
import { tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'
import { assemble as watToWasm } from '../sandbox/runtime/wat.ts'

/**
 * Sandboxes on a real node over HTTP, WebSocket and the CLI: every language's hello, limits that
 * end runs while the node keeps answering, no way to the host's files, snapshots, forks,
 * restart, namespaces.
 */

const HELLO_WAT = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))`

/** opens /etc/passwd through the preopened directory (fd 3 and 4): must fail, the filesystem is in memory */
const PASSWD_WAT = `(module
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "etc/passwd")
  (func (export "_start")
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 32)))
      (then (call $proc_exit (i32.const 10))))
    (if (i32.eqz (call $path_open (i32.const 4) (i32.const 0) (i32.const 64) (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 32)))
      (then (call $proc_exit (i32.const 11))))
    (call $proc_exit (i32.const 0))))`

async function rssOf (node: TestNode): Promise<number> {
  const text = (await node.api<string>('GET', '/metrics')).body
  return Number(/^bkg_process_resident_memory_bytes (\d+)/m.exec(text)![1])
}

describe('sandboxes on a node', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let node: TestNode
  let lab: string

  const run = async (body: Record<string, unknown>, token?: string): Promise<{ status: number, body: any }> => await node.api('POST', '/api/v1/sandboxes/run', body, token)

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    node = await mesh.addNode('a', { namespaces: ['lab'] })
    await node.start()
    lab = createToken(node, 'lab', 'writer')
  }, 60_000)

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('hello in JavaScript and in a WASI module; exit codes and exceptions come back', async () => {
    expect((await run({ code: 'console.log("hello", 6 * 7)' }, lab)).body).toMatchObject({ exitCode: 0, stdout: 'hello 42\n', stderr: '' })
    const wasm = await run({ language: 'wasm', module: Buffer.from(await watToWasm(HELLO_WAT)).toString('base64') }, lab)
    expect(wasm.body).toMatchObject({ exitCode: 0, stdout: 'hello from wasm\n' })
    expect((await run({ code: 'process.exit(3)' }, lab)).body.exitCode).toBe(3)
    const thrown = (await run({ code: 'throw new TypeError("boom")' }, lab)).body
    expect(thrown).toMatchObject({ exitCode: 1, error: { name: 'TypeError', message: 'boom' } })
    const python = (await run({ language: 'python', code: 'import sys\nprint("hello", 6 * 7)\nprint("oops", file=sys.stderr)' }, lab)).body
    expect(python).toMatchObject({ exitCode: 0, stdout: 'hello 42\n', stderr: 'oops\n' })
    expect((await run({ language: 'python', code: 'import sys\nsys.exit(3)' }, lab)).body.exitCode).toBe(3)
    const raised = (await run({ language: 'python', code: 'def f():\n  raise ValueError("bad")\nf()' }, lab)).body
    expect(raised).toMatchObject({ exitCode: 1, error: { name: 'ValueError' } })
    expect(raised.error.stack).toMatch(/line 2, in f/)
  }, 60_000)

  it('an endless loop and new Array(1e9)+"" end at their limit while the node keeps answering', async () => {
    for (const code of ['while (true) {}', 'new Array(1e9) + ""']) {
      const started = Date.now()
      const pending = run({ code, timeoutMs: 1500 }, lab)
      const healthTimes: number[] = []
      while (Date.now() - started < 1000) {
        const t0 = performance.now()
        expect((await node.api('GET', '/api/v1/health')).status).toBe(200)
        healthTimes.push(performance.now() - t0)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      const result = (await pending).body
      expect(result).toMatchObject({ exitCode: null, reason: 'timeout' })
      // the event loop never waited on the guest (a blocked loop would show as seconds here)
      expect(Math.max(...healthTimes)).toBeLessThan(1000)
    }
    expect((await run({ code: 'console.log("still here")' }, lab)).body.stdout).toBe('still here\n')
  }, 30_000)

  it('a memory bomb is contained: reason memory, and the node\'s RSS stays bounded', async () => {
    const before = await rssOf(node)
    const result = (await run({ code: 'const a = []; while (true) a.push(new Array(1e6).fill(1))', policy: { memoryBytes: 64 * 1024 * 1024 } }, lab)).body
    expect(result.reason).toBe('memory')
    expect(result.memoryBytes).toBeLessThanOrEqual(64 * 1024 * 1024)
    expect(await rssOf(node) - before).toBeLessThan(256 * 1024 * 1024)
  }, 30_000)

  it('the host\'s files are out of reach: /etc/passwd and the data dir are not in any guest', async () => {
    const js = (await run({ code: `for (const p of ['/etc/passwd', ${JSON.stringify(node.paths.apiToken)}]) console.log(fs.exists(p)); console.log(typeof require, typeof process.binding)` }, lab)).body
    expect(js.stdout).toBe('false\nfalse\nundefined undefined\n')
    const wasm = (await run({ language: 'wasm', module: Buffer.from(await watToWasm(PASSWD_WAT)).toString('base64') }, lab)).body
    expect(wasm.exitCode).toBe(0)
    const python = (await run({ language: 'python', code: `import os\nfor p in ['/etc/passwd', ${JSON.stringify(node.paths.apiToken)}]:\n  print(os.path.exists(p))\ntry:\n  import js\n  print('js reachable')\nexcept ImportError:\n  print('no js')` }, lab)).body
    expect(python.stdout).toBe('False\nFalse\nno js\n')
  }, 60_000)

  it('files in and out, stdin, and output streamed as NDJSON', async () => {
    const result = (await run({ code: 'fs.writeFile("/out/sum.txt", String(fs.readFile("/in/a.txt", "utf8").length + readStdin().length))', files: { '/in/a.txt': 'abc' }, stdin: 'xy' }, lab)).body
    expect(result.files).toEqual({ '/out/sum.txt': { encoding: 'utf8', data: '5' } })

    const response = await fetch(`${node.url}/api/v1/sandboxes/run`, {
      method: 'POST',
      headers: { authorization: `Bearer ${lab}`, 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify({ code: 'console.log("one"); console.error("two"); console.log("three")' })
    })
    expect(response.headers.get('content-type')).toBe('application/x-ndjson')
    const lines = (await response.text()).trim().split('\n').map((line) => JSON.parse(line))
    expect(lines.filter((line) => line.type !== 'exit').map((line) => `${line.type}:${line.data}`).join('')).toBe('stdout:one\nstderr:two\nstdout:three\n')
    expect(lines.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 })
  })

  it('snapshot → change → restore; fork ×5 diverges; kill -9 and restart resumes from the last snapshot', async () => {
    const box = (await node.api('POST', '/api/v1/sandboxes', { language: 'js', mode: 'persistent' }, lab)).body
    const exec = async (id: string, code: string): Promise<string> => (await node.api('POST', `/api/v1/sandboxes/${id}/exec`, { code }, lab)).body.stdout
    await exec(box.id, 'var n = 1; fs.writeFile("/note", "first")')
    const { snapshotId } = (await node.api('POST', `/api/v1/sandboxes/${box.id}/snapshots`, undefined, lab)).body
    await exec(box.id, 'n = 2; fs.writeFile("/note", "second")')
    expect(await exec(box.id, 'console.log(n, fs.readFile("/note", "utf8"))')).toBe('2 second\n')
    expect((await node.api('POST', `/api/v1/sandboxes/${box.id}/restore`, { snapshotId }, lab)).status).toBe(200)
    expect(await exec(box.id, 'console.log(n, fs.readFile("/note", "utf8"))')).toBe('1 first\n')

    const forks = (await node.api('POST', `/api/v1/sandboxes/${box.id}/fork`, { snapshotId, count: 5 }, lab)).body.sandboxes
    expect(forks).toHaveLength(5)
    // one after the other: a namespace runs at most 4 at once (its quota)
    for (const [i, fork] of forks.entries()) await exec(fork.id, `n = n * 10 + ${i}`)
    const seen: string[] = []
    for (const fork of forks) seen.push(await exec(fork.id, 'console.log(n)'))
    expect(seen).toEqual(['10\n', '11\n', '12\n', '13\n', '14\n'])

    await exec(box.id, 'n = 7')
    await node.api('POST', `/api/v1/sandboxes/${box.id}/snapshots`, undefined, lab)
    await exec(box.id, 'n = 8')
    await node.stop('SIGKILL')
    await node.start()
    const listed = (await node.api('GET', `/api/v1/sandboxes/${box.id}`, undefined, lab)).body
    expect(listed).toMatchObject({ state: 'stopped', metrics: { snapshots: 2 } })
    expect(await exec(box.id, 'console.log(n)')).toBe('7\n')
    // a fork that took no snapshot of its own comes back from the one it was forked from
    expect(await exec(forks[3].id, 'console.log(n)')).toBe('1\n')
  }, 60_000)

  it('a persistent Python sandbox: state between runs, snapshot → change → restore', async () => {
    const box = (await node.api('POST', '/api/v1/sandboxes', { language: 'python', mode: 'persistent' }, lab)).body
    const exec = async (code: string): Promise<string> => (await node.api('POST', `/api/v1/sandboxes/${box.id}/exec`, { code }, lab)).body.stdout
    await exec('n = 1\nopen("/tmp/note", "w").write("first")')
    const { snapshotId } = (await node.api('POST', `/api/v1/sandboxes/${box.id}/snapshots`, undefined, lab)).body
    await exec('n = 2\nopen("/tmp/note", "w").write("second")')
    expect(await exec('print(n, open("/tmp/note").read())')).toBe('2 second\n')
    expect((await node.api('POST', `/api/v1/sandboxes/${box.id}/restore`, { snapshotId }, lab)).status).toBe(200)
    expect(await exec('print(n, open("/tmp/note").read())')).toBe('1 first\n')
    await node.api('DELETE', `/api/v1/sandboxes/${box.id}`, undefined, lab)
  }, 90_000)

  it('a namespace token sees only its namespace; tokens and bodies are checked', async () => {
    const other = createToken(node, 'other', 'writer')
    const box = (await node.api('POST', '/api/v1/sandboxes', { language: 'js', mode: 'quick' }, lab)).body
    expect((await node.api('GET', `/api/v1/sandboxes/${box.id}`, undefined, other)).status).toBe(404)
    expect((await node.api('GET', '/api/v1/sandboxes', undefined, other)).body.sandboxes).toEqual([])
    expect((await node.api('POST', `/api/v1/sandboxes/${box.id}/exec`, { code: '1' }, createToken(node, 'lab', 'reader'))).body.error.code).toBe('forbidden')
    expect((await node.api('POST', '/api/v1/sandboxes/run', { code: '1' }, '')).status).toBe(401)
    expect((await run({ code: '1', policy: { memoryBytes: 1 } }, lab)).body.error).toMatchObject({ code: 'invalid_request', message: /memoryBytes/ })
    expect((await run({ language: 'wasm', module: Buffer.from('not wasm').toString('base64') }, lab)).status).toBeLessThan(500)
    expect((await node.api('POST', `/api/v1/sandboxes/${box.id}/snapshots`, undefined, lab)).body.error.code).toBe('not_persistent')
  })

  it('WS stream: output as it happens, stdin from the client', async () => {
    const box = (await node.api('POST', '/api/v1/sandboxes', { language: 'js', mode: 'persistent' }, lab)).body
    const socket = new WebSocket(`${node.url.replace('http', 'ws')}/api/v1/sandboxes/${box.id}/stream`, { headers: { authorization: `Bearer ${lab}` } })
    const frames: any[] = []
    await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
    const exited = new Promise<any>((resolve) => {
      socket.on('message', (data) => {
        const frame = JSON.parse(String(data))
        frames.push(frame)
        if (frame.type === 'stdout' && frame.data === 'ready\n') {
          socket.send(JSON.stringify({ type: 'stdin', data: 'ping' }))
          socket.send(JSON.stringify({ type: 'stdin-end' }))
        }
        if (frame.type === 'exit') resolve(frame)
      })
    })
    socket.send(JSON.stringify({ type: 'exec', code: 'console.log("ready"); console.log("got " + readStdin())' }))
    const exit = await exited
    socket.close()
    expect(exit.exitCode).toBe(0)
    expect(frames.filter((frame) => frame.type === 'stdout').map((frame) => frame.data).join('')).toBe('ready\ngot ping\n')
  })

  it('MCP on the node with both official clients: tools, a run with progress, a cancelled run', async () => {
    const headers = { Authorization: `Bearer ${lab}` }
    const legacy = new LegacyClient({ name: 'v1', version: '1' })
    const legacyTransport = new LegacyTransport(new URL(`${node.url}/mcp`), { requestInit: { headers } })
    await legacy.connect(legacyTransport)
    const modern = new ModernClient({ name: 'v2', version: '1' }, { versionNegotiation: { mode: 'auto' } })
    await modern.connect(new ModernTransport(new URL(`${node.url}/mcp`), { requestInit: { headers } }))
    try {
      expect(legacyTransport.sessionId).toBeTruthy()
      expect(modern.getNegotiatedProtocolVersion()).toBe('2026-07-28')
      for (const tools of [await legacy.listTools(), await modern.listTools()]) {
        const run = tools.tools.find((tool) => tool.name === 'sandbox_run')!
        expect(Object.keys(run.inputSchema.properties ?? {})).toEqual(expect.arrayContaining(['code', 'language', 'timeoutMs']))
      }
      const code = 'for (let i = 0; i < 3; i++) { console.log("tick " + i); const end = Date.now() + 400; while (Date.now() < end) {} }'
      const progress: unknown[] = []
      const legacyResult = await legacy.callTool({ name: 'sandbox_run', arguments: { code } }, undefined, { onprogress: (p) => progress.push(p) }) as { structuredContent?: { stdout: string } }
      expect(legacyResult.structuredContent?.stdout).toBe('tick 0\ntick 1\ntick 2\n')
      expect(progress.length).toBeGreaterThan(0)
      const modernResult = await modern.callTool({ name: 'sandbox_run', arguments: { code: 'console.log(6 * 7)' } }) as { structuredContent?: { stdout: string } }
      expect(modernResult.structuredContent?.stdout).toBe('42\n')

      for (const call of [
        async (signal: AbortSignal) => await legacy.callTool({ name: 'sandbox_run', arguments: { code: 'while (true) {}' } }, undefined, { signal }),
        async (signal: AbortSignal) => await modern.callTool({ name: 'sandbox_run', arguments: { code: 'while (true) {}' } }, { signal })
      ]) {
        const controller = new AbortController()
        const started = Date.now()
        setTimeout(() => controller.abort(new Error('stop')), 300)
        await expect(call(controller.signal)).rejects.toThrow()
        expect(Date.now() - started).toBeLessThan(5000)
        // the run was cancelled on the node, not left to its 10 s timeout: within 3 s a namespace's 4 run slots are free again
        await waitFor('the cancelled run to end on the node', async () => {
          const after = await Promise.all([1, 2, 3, 4].map(async () => (await run({ code: 'console.log(1)' }, lab)).body.stdout))
          return after.every((stdout) => stdout === '1\n')
        }, 3000, 100)
      }
    } finally {
      await legacyTransport.terminateSession().catch(() => {})
      await legacy.close()
      await modern.close()
    }
  }, 60_000)

  it('bkg sandbox run streams output and exits with the code\'s status', async () => {
    const ok = await runBkg(['sandbox', 'run', '-e', 'console.log("from the cli"); process.exit(4)', '--data', node.paths.dir], node.paths.dir)
    expect(ok.stdout).toBe('from the cli\n')
    expect(ok.code).toBe(4)
    const file = join(tmp.dir, 'loop.js')
    await writeFile(file, 'while (true) {}')
    const timeout = await runBkg(['sandbox', 'run', file, '--timeout', '300', '--data', node.paths.dir], node.paths.dir)
    expect(timeout.code).toBe(124)
    expect(timeout.stderr).toMatch(/timeout/)
    const usage = await runBkg(['sandbox', 'run', '--data', node.paths.dir], node.paths.dir)
    expect(usage.code).toBe(2)
    expect(usage.stderr).toMatch(/FILE or -e/)
  })
})
