import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/client'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { createMcpHandler } from '@modelcontextprotocol/server'
import pino from 'pino'
import type { Principal } from '../node/auth/index.ts'
import { mcpServerFactory } from '../node/mcp/server.ts'
import { sandboxRuntime, sandboxService, type Language, type SandboxRuntime, type SandboxService } from '../node/sandbox/index.ts'
import { assemble } from '../test/sandbox/runtime/wat.ts'
import { TestMesh } from '../test/helpers/mesh.ts'
import { errorText, failedMetric, metric, percentile, processMemory, progress, round, summarize, type Metric } from './lib.ts'

const MiB = 1024 * 1024
const RUNS = 200
const WARMUP = 20
const SATURATION_MS = 3000
const PYTHON_RUNS = 20
const log = pino({ level: 'silent' })
const admin: Principal = { kind: 'node-admin', role: 'admin', namespace: '*', tokenId: 'bench', expiresAt: null }
const limits = { timeoutMs: 5000, memoryBytes: 64 * MiB, outputBytes: MiB }

const HELLO_WAT = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))`

const PROGRAMS: Record<Language, () => Promise<{ code?: string, module?: Uint8Array }>> = {
  js: async () => ({ code: 'console.log("hello")' }),
  wasm: async () => ({ module: await assemble(HELLO_WAT) }),
  python: async () => ({ code: 'print("hello")' })
}
const FIRST_OUTPUT_TARGETS: Record<Language, { p50: number, p99: number | null }> = {
  js: { p50: 10, p99: 50 },
  wasm: { p50: 10, p99: 50 },
  python: { p50: 100, p99: null }
}

/**
 * Issue 12's sandbox rows: start-to-first-output per language from a warm pool (in the node's
 * own runtime, called directly), runs per second with the pool saturated, snapshot and restore of
 * a 16 and a 64 MiB JavaScript heap (through the sandbox service, pages to disk), fork ×10, what
 * MCP's tools/call adds over a direct run, and a node's RSS with its pool warm.
 */
export async function measureSandboxes (root: string): Promise<Metric[]> {
  const rows: Metric[] = []
  const runtime = sandboxRuntime({ poolSize: { js: 2, wasm: 2 } })({ log })
  const sandboxes = sandboxService({ dir: join(root, 'sandbox-bench'), quotas: { sandboxes: 64, memoryBytes: 8192 * MiB, concurrentRuns: 64 } })({ runtime, log })
  try {
    progress('sandboxes: warm pool')
    await runtime.start()
    await sandboxes.start()
    for (const language of ['js', 'wasm', 'python'] as const) rows.push(...await firstOutput(runtime, language))
    rows.push(...await saturation(runtime))
    rows.push(...await snapshots(sandboxes))
    rows.push(...await mcpOverhead(sandboxes))
  } finally {
    await sandboxes.stop().catch(() => {})
    await runtime.stop().catch(() => {})
  }
  rows.push(...await nodeRss(root))
  return rows
}

async function firstOutput (runtime: SandboxRuntime, language: Language): Promise<Metric[]> {
  const target = FIRST_OUTPUT_TARGETS[language]
  const id = `sandbox_first_output_${language}`
  try {
    progress(`sandboxes: start-to-first-output, ${language}`)
    const program = await PROGRAMS[language]()
    const samples: number[] = []
    // a Python worker is never reused: each run waits (untimed) until the pool has a fresh one warm
    // again (~0.7 s to start one), which is what "from a warm pool" means for it
    const runs = language === 'python' ? PYTHON_RUNS : RUNS
    const warmup = language === 'python' ? 2 : WARMUP
    for (let i = 0; i < runs + warmup; i++) {
      // (before its first Python run the runtime keeps no Python worker warm)
      if (language === 'python' && i > 0) await untilWarm(runtime, 'python')
      const started = performance.now()
      let first = 0
      const result = await runtime.runOnce(language, { ...program, limits }, { onOutput: () => { first ||= performance.now() - started } })
      if (result.exitCode !== 0 || first === 0) throw new Error(`a hello run ended with ${JSON.stringify({ exitCode: result.exitCode, reason: result.reason, error: result.error })}`)
      if (i >= warmup) samples.push(first)
    }
    const summary = summarize(samples)
    return [
      metric({ id: `${id}_p50_ms`, name: `sandbox ${language}: start→first output p50 (warm pool)`, value: summary.p50, unit: 'ms', target: { op: '<', value: target.p50 }, detail: { ...summary } }),
      ...(target.p99 != null ? [metric({ id: `${id}_p99_ms`, name: `sandbox ${language}: start→first output p99`, value: summary.p99, unit: 'ms', target: { op: '<', value: target.p99 } })] : [])
    ]
  } catch (err) {
    return [failedMetric(`${id}_p50_ms`, `sandbox ${language}: start→first output p50 (warm pool)`, 'ms', { op: '<', value: target.p50 }, err)]
  }
}

async function untilWarm (runtime: SandboxRuntime, language: Language): Promise<void> {
  const deadline = Date.now() + 30_000
  while (runtime.stats().idle[language] < 1) {
    if (Date.now() > deadline) throw new Error(`no warm ${language} worker after 30 s`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Runs per second with as many runs in flight as the pool has warm workers (and twice that). */
async function saturation (runtime: SandboxRuntime): Promise<Metric[]> {
  progress('sandboxes: executions/s with the pool saturated')
  const rows: Metric[] = []
  for (const concurrency of [2, 4]) {
    let done = 0
    const until = performance.now() + SATURATION_MS
    const started = performance.now()
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        await runtime.runOnce('js', { code: 'console.log("hello")', limits })
        done++
      }
    }))
    rows.push(metric({
      id: `sandbox_js_runs_per_s_c${concurrency}`,
      name: `sandbox js: runs/s, ${concurrency} in flight (2 warm)`,
      value: round(done / ((performance.now() - started) / 1000)),
      unit: '/s',
      target: null,
      note: `${done} runs`
    }))
  }
  return rows
}

async function snapshots (sandboxes: SandboxService): Promise<Metric[]> {
  const rows: Metric[] = []
  for (const heapMiB of [16, 64]) {
    try {
      progress(`sandboxes: snapshot and restore of a ${heapMiB} MiB heap`)
      const box = await sandboxes.create(admin, { language: 'js', mode: 'persistent', policy: { memoryBytes: 128 * MiB, timeoutMs: 60_000 } })
      // a heap of about heapMiB: QuickJS starts at 16 MiB; strings of distinct bytes so pages differ
      const fill = heapMiB > 16 ? `var fill = []; for (let i = 0; i < ${heapMiB - 18}; i++) fill.push(String(i).padEnd(${MiB}, 'abcdefghij' + i))` : 'var fill = 1'
      await sandboxes.exec(admin, box.id, { code: fill })
      const t0 = performance.now()
      const first = await sandboxes.snapshot(admin, box.id)
      const snapshotMs = performance.now() - t0
      await sandboxes.exec(admin, box.id, { code: 'var changed = 1' })
      const t1 = performance.now()
      const second = await sandboxes.snapshot(admin, box.id)
      const againMs = performance.now() - t1
      const t2 = performance.now()
      await sandboxes.restore(admin, box.id, first.id)
      const restoreMs = performance.now() - t2
      rows.push(metric({ id: `sandbox_snapshot_${heapMiB}mib_ms`, name: `sandbox snapshot, ${heapMiB} MiB heap (image ${round(first.memoryBytes / MiB)} MiB)`, value: round(snapshotMs), unit: 'ms', target: null, note: `${round(first.storedBytes / MiB)} MiB of pages written` }))
      rows.push(metric({ id: `sandbox_snapshot_again_${heapMiB}mib_ms`, name: '  the next snapshot after a small change', value: round(againMs), unit: 'ms', target: null, note: `${round(second.storedBytes / 1024)} KiB new pages (equal pages stored once)`, detail: { storedBytes: second.storedBytes } }))
      rows.push(metric({ id: `sandbox_restore_${heapMiB}mib_ms`, name: `sandbox restore, ${heapMiB} MiB heap`, value: round(restoreMs), unit: 'ms', target: null, note: 'pages read and checked, image into the guest' }))
      if (heapMiB === 16) {
        progress('sandboxes: fork ×10')
        const t3 = performance.now()
        const forks = await sandboxes.fork(admin, box.id, { snapshotId: first.id, count: 10 })
        rows.push(metric({ id: 'sandbox_fork_10_ms', name: 'sandbox fork ×10 (16 MiB heap, a guest each)', value: round(performance.now() - t3), unit: 'ms', target: null }))
        for (const fork of forks) await sandboxes.remove(admin, fork.id)
      }
      await sandboxes.remove(admin, box.id)
    } catch (err) {
      rows.push(failedMetric(`sandbox_snapshot_${heapMiB}mib_ms`, `sandbox snapshot, ${heapMiB} MiB heap`, 'ms', null, err))
    }
  }
  return rows
}

/** MCP's tools/call against calling the sandbox service directly, both running the same hello; alternated so noise hits both. */
async function mcpOverhead (sandboxes: SandboxService): Promise<Metric[]> {
  progress('sandboxes: MCP tools/call overhead')
  const factory = mcpServerFactory({ sandboxes })
  const handler = createMcpHandler(({ requestInfo }) => factory({ principal: admin, adminChecked: true }, requestInfo?.headers.get('mcp-name') ?? undefined), { legacy: 'reject' })
  const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 'bench', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} }
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'sandbox_run', arguments: { code: 'console.log("hello")' }, _meta: meta } })
  const viaMcp = async (): Promise<void> => {
    const response = await handler.fetch(new Request('http://bench/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'sandbox_run' },
      body
    }))
    const answer = await response.json() as { result?: { isError?: boolean } }
    if (answer.result == null || answer.result.isError === true) throw new Error(`tools/call failed: ${JSON.stringify(answer)}`)
  }
  const direct = async (): Promise<void> => { await sandboxes.run(admin, { language: 'js', code: 'console.log("hello")' }) }
  try {
    const times: { direct: number[], mcp: number[] } = { direct: [], mcp: [] }
    // pairs, in turn: the median of the differences is steadier than a difference of medians on a busy machine
    const differences: number[] = []
    for (let i = 0; i < RUNS + WARMUP; i++) {
      const pair: number[] = []
      for (const [name, call] of [['direct', direct], ['mcp', viaMcp]] as const) {
        const started = performance.now()
        await call()
        pair.push(performance.now() - started)
        if (i >= WARMUP) times[name].push(performance.now() - started)
      }
      if (i >= WARMUP) differences.push(pair[1] - pair[0])
    }
    const overhead = percentile(differences, 50)
    // the MCP layer alone: the same request to a service that answers at once (what MCP adds, without a run's noise)
    const layer: number[] = []
    const instantFactory = mcpServerFactory({ sandboxes: { ...sandboxes, run: async () => ({ exitCode: 0, stdout: 'hello\n', stderr: '', cpuMs: 0, wallMs: 0, memoryBytes: 0, files: {} }) } as unknown as SandboxService })
    const instant = createMcpHandler(({ requestInfo }) => instantFactory({ principal: admin, adminChecked: true }, requestInfo?.headers.get('mcp-name') ?? undefined), { legacy: 'reject' })
    try {
      for (let i = 0; i < RUNS + WARMUP; i++) {
        const started = performance.now()
        const response = await instant.fetch(new Request('http://bench/mcp', {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'sandbox_run' },
          body
        }))
        await response.json()
        if (i >= WARMUP) layer.push(performance.now() - started)
      }
    } finally {
      await instant.close()
    }
    return [
      metric({
        id: 'sandbox_mcp_overhead_ms',
        name: 'MCP tools/call overhead (p50, the MCP layer alone)',
        value: round(percentile(layer, 50), 2),
        unit: 'ms',
        target: { op: '<', value: 2 },
        note: `p99 ${round(percentile(layer, 99), 2)} ms; in process, a 2026-07-28 request to a service answering at once`
      }),
      metric({
        id: 'sandbox_mcp_over_direct_run_ms',
        name: '  with a real run: MCP minus direct (median of pairs)',
        value: round(overhead, 2),
        unit: 'ms',
        target: null,
        note: `direct p50 ${round(percentile(times.direct, 50), 2)} ms, via MCP ${round(percentile(times.mcp, 50), 2)} ms; the runs' own noise is in it`
      })
    ]
  } catch (err) {
    return [failedMetric('sandbox_mcp_overhead_ms', 'MCP tools/call sandbox_run over a direct run (p50)', 'ms', { op: '<', value: 2 }, err)]
  } finally {
    await handler.close()
  }
}

/** A real node's RSS idle, then with its pool warm (after its first runs), and the MCP path over HTTP as context. */
async function nodeRss (root: string): Promise<Metric[]> {
  progress('sandboxes: node RSS with the pool warm')
  const mesh = await TestMesh.create(join(root, 'sandbox-node'), 'Bench Sandbox Operator')
  try {
    const node = await mesh.addNode('sandboxes')
    await node.start()
    const pid = node.proc!.child.pid!
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const idle = (await processMemory(pid)).rssMiB
    for (let i = 0; i < 50; i++) await node.api('POST', '/api/v1/sandboxes/run', { code: 'console.log("hello")' })
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const warm = (await processMemory(pid)).rssMiB

    const client = new Client({ name: 'bench', version: '1' }, { versionNegotiation: { mode: 'auto' } })
    await client.connect(new StreamableHTTPClientTransport(new URL(`${node.url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${node.token}` } } }))
    const rest: number[] = []
    const mcp: number[] = []
    for (let i = 0; i < 100 + WARMUP; i++) {
      const t0 = performance.now()
      await node.api('POST', '/api/v1/sandboxes/run', { code: 'console.log("hello")' })
      const t1 = performance.now()
      await client.callTool({ name: 'sandbox_run', arguments: { code: 'console.log("hello")' } })
      const t2 = performance.now()
      if (i >= WARMUP) {
        rest.push(t1 - t0)
        mcp.push(t2 - t1)
      }
    }
    await client.close()
    return [
      metric({ id: 'sandbox_node_rss_warm_mib', name: 'node RSS with its sandbox pool warm', value: round(warm), unit: 'MiB', target: null, note: `${round(idle)} MiB before its first run (the pool starts at the first run)` }),
      metric({ id: 'sandbox_http_run_p50_ms', name: '  quick js run over HTTP (REST) p50', value: round(percentile(rest, 50), 2), unit: 'ms', target: null, note: `MCP v2 client over HTTP p50 ${round(percentile(mcp, 50), 2)} ms` })
    ]
  } catch (err) {
    return [failedMetric('sandbox_node_rss_warm_mib', 'node RSS with its sandbox pool warm', 'MiB', null, new Error(errorText(err)))]
  } finally {
    await mesh.stopAll().catch(() => {})
  }
}
