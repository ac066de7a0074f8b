/*
 * Latency of the sandbox runtime: start-to-first-output of quick runs per language (warm pool),
 * Python's image/restore, and image/restore of 16 and 64 MiB JS heaps (in the guest,
 * and through the worker as the service sees it). Run: node test/sandbox/runtime/quick-mode.bench.ts
 * (prints JSON). Other suites running at the same time inflate the tails a lot on 2 cores.
 */
import { GuestIO } from '../../../node/sandbox/runtime/guest-io.ts'
import { createRunner } from '../../../node/sandbox/runtime/js-runner.ts'
import { compileQuickJs } from '../../../node/sandbox/runtime/quickjs-wasm.ts'
import { fixture } from './wat.ts'
import { limits, MiB, startRuntime } from './runtime-helpers.ts'

const RUNS = Number(process.env.RUNS ?? 200)

function percentiles (samples: number[]): { p50: number, p99: number, n: number } {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number): number => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 100) / 100
  return { p50: at(0.5), p99: at(0.99), n: sorted.length }
}

async function timed (action: () => unknown): Promise<number> {
  const start = performance.now()
  await action()
  return performance.now() - start
}

const runtime = await startRuntime({ poolSize: { js: 2, wasm: 2 } })
const hello = await fixture('hello')
const firstOutput: Record<'js' | 'wasm', number[]> = { js: [], wasm: [] }
const wall: Record<'js' | 'wasm', number[]> = { js: [], wasm: [] }
for (let i = 0; i < RUNS + 10; i++) {
  for (const language of ['js', 'wasm'] as const) {
    const start = performance.now()
    let first = 0
    const request = language === 'js' ? { code: 'console.log("hello")', limits } : { module: hello, limits }
    await runtime.runOnce(language, request, { onOutput: () => { first ||= performance.now() - start } })
    if (i >= 10) {
      firstOutput[language].push(first)
      wall[language].push(performance.now() - start)
    }
  }
}

// in the guest's own thread: what an image and a restore cost (a quick reset is the restore of
// the 16 MiB clean heap). One QuickJS module per thread only: quickjs-emscripten keeps host
// callbacks per runtime pointer, and two modules in one thread have the same pointers. Images
// from a worker did not restore into a main-thread guest here (emscripten starts differently
// there), so the in-thread guest makes its own.
const capBytes = 96 * MiB
const inThread = await createRunner({ mode: 'persistent', memoryBytes: capBytes, quickjsModule: await compileQuickJs() })
const images: Record<string, unknown> = {}
for (const heapMiB of [16, 64]) {
  const guest = await runtime.openPersistent('js', { memoryBytes: capBytes })
  const grow = heapMiB > 16 ? `var filler = 'x'.repeat(${(heapMiB - 10) * MiB})` : 'var filler = 1'
  await guest.run({ code: grow, limits: { ...limits, memoryBytes: capBytes } })
  const image = await guest.image()
  const job = { code: grow, files: {}, env: {}, args: [], limits: { ...limits, memoryBytes: capBytes } }
  await inThread.run(job, new GuestIO(job, new Int32Array(new SharedArrayBuffer(4)), () => {}))
  const ownImage = inThread.image()
  const takeInThread: number[] = []
  const restoreInThread: number[] = []
  const takeThroughWorker: number[] = []
  const restoreThroughWorker: number[] = []
  for (let i = 0; i < 10; i++) {
    takeInThread.push(await timed(() => inThread.image()))
    restoreInThread.push(await timed(() => { inThread.restore(ownImage) }))
    takeThroughWorker.push(await timed(async () => await guest.image()))
    restoreThroughWorker.push(await timed(async () => { await guest.restore(image) }))
  }
  images[`${heapMiB}MiB`] = {
    imageBytes: image.memory?.byteLength,
    inThreadImageBytes: ownImage.memory?.byteLength,
    imageInThread: percentiles(takeInThread),
    restoreInThread: percentiles(restoreInThread),
    imageThroughWorker: percentiles(takeThroughWorker),
    restoreThroughWorker: percentiles(restoreThroughWorker)
  }
  await guest.close()
}
await runtime.stop()

// python: every quick run replaces its worker (0.3-1 s from the start snapshot), so fewer runs;
// "ready" runs as soon as the replacement is warm, "settled" after it has idled 500 ms (V8 tiers
// pyodide's wasm up in the background for a while after a worker starts)
const PY_RUNS = Number(process.env.PY_RUNS ?? 20)
const pyRuntime = await startRuntime({ poolSize: { js: 0, wasm: 0, python: 1 } })
const python: Record<string, number[]> = { ready: [], settled: [], image: [], restore: [] }
for (const [label, settleMs] of [['ready', 0], ['settled', 500]] as const) {
  for (let i = 0; i < PY_RUNS; i++) {
    while (pyRuntime.stats().idle.python < 1) await new Promise(resolve => setTimeout(resolve, 5))
    await new Promise(resolve => setTimeout(resolve, settleMs))
    const start = performance.now()
    let first = 0
    await pyRuntime.runOnce('python', { code: 'print("hello")', limits }, { onOutput: () => { first ||= performance.now() - start } })
    python[label].push(first)
  }
}
const pyGuest = await pyRuntime.openPersistent('python', { memoryBytes: limits.memoryBytes })
await pyGuest.run({ code: 'data = list(range(100000))', limits })
let pyImage = await pyGuest.image()
for (let i = 0; i < 10; i++) {
  python.image.push(await timed(async () => { pyImage = await pyGuest.image() }))
  python.restore.push(await timed(async () => { await pyGuest.restore(pyImage) }))
}
await pyGuest.close()
await pyRuntime.stop()

console.log(JSON.stringify({
  python: {
    startToFirstOutputMs: { ready: percentiles(python.ready), settled: percentiles(python.settled) },
    imageMs: percentiles(python.image),
    restoreMs: percentiles(python.restore),
    imageBytes: pyImage.memory?.byteLength
  },
  startToFirstOutputMs: { js: percentiles(firstOutput.js), wasm: percentiles(firstOutput.wasm) },
  runWallMs: { js: percentiles(wall.js), wasm: percentiles(wall.wasm) },
  imagesMs: images
}, null, 2))
