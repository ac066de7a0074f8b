/**
 * The sandbox runtime: untrusted code in WebAssembly guests inside worker threads. JavaScript
 * runs in QuickJS (quickjs-emscripten) in a `WebAssembly.Memory` whose maximum is the memory
 * cap; WASI preview1 modules run through @wasmer/wasi with an in-memory filesystem and their
 * declared memory maximum rewritten to the cap. Python runs in pyodide (CPython 3.14 in wasm) with
 * its wasm memory capped the same way (a pyodide directory per cap in `cacheDir`), loaded from a
 * start snapshot (made by the first Python worker, 3-5 s; then 0.6 s per worker), its JavaScript
 * bridges (`js`, `pyodide_js`, pyodide.ffi, _pyodide_core, ctypes) and Emscripten's host imports
 * (system(), sockets, dlopen, NODEFS) removed. A quick Python run's worker is always replaced, never
 * reset; no Python worker is kept warm until Python is first used (each costs 100-160 MiB of RSS),
 * then one (`poolSize.python` for more). A Python image is pyodide's memory snapshot and the files.
 * Quick runs take a warm worker and give it back reset (or replace it); persistent guests keep
 * their state in a worker of their own and can be imaged and restored (and so forked: restore one
 * image into several guests). Limits: the interrupt handler and, behind it, a terminated worker
 * for time; the Memory maximum for memory; the output limit for stdout + stderr + files.
 *
 * @example
 * import { sandboxRuntime } from './runtime/index.ts'
 *
 * const runtime = sandboxRuntime({ poolSize: { js: 2, wasm: 1 } })({ log })
 * await runtime.start()
 * const limits = { timeoutMs: 5000, memoryBytes: 64 * 1024 * 1024, outputBytes: 1024 * 1024 }
 * const result = await runtime.runOnce('js', { code: 'console.log(1 + 1)', limits }, {
 *   onOutput: ({ stream, data }) => { process.stdout.write(data) },
 *   signal: AbortSignal.timeout(10_000)
 * })
 * // result: { exitCode: 0, stdout: '2\n', stderr: '', cpuMs, wallMs, memoryBytes, files: {} }
 *
 * const guest = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes })
 * await guest.run({ code: 'var n = 41', limits })
 * const image = await guest.image()               // between runs only
 * await guest.run({ code: 'n++', limits })
 * await guest.restore(image)                      // n is 41 again
 * const fork = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes, image })
 * await guest.close(); await fork.close()
 *
 * // python: the same calls; an uncaught exception's error has its type and traceback
 * await runtime.runOnce('python', { code: 'import sys\nprint(sys.argv)\nsys.exit(3)', args: ['x'], limits })
 * // { exitCode: 3, stdout: "['/main.py', 'x']\n", … }
 * await runtime.stop()
 */
export { sandboxRuntime, WorkerSandboxRuntime, type SandboxRuntimeComponents, type SandboxRuntimeInit } from './sandbox-runtime.ts'
export { capWasmMemory, type CappedMemory } from './memory-cap.ts'
export { DEFAULT_MEMORY_BYTES, DEFAULT_POOL_SIZE, MIN_JS_MEMORY_BYTES, MIN_PYTHON_MEMORY_BYTES, MIN_WASM_MEMORY_BYTES } from './constants.ts'
export type {
  BreachReason, Language, OutputChunk, PersistentGuest, RunLimits, RunOptions, RunRequest, RunResult, RuntimeStats,
  SandboxImage, SandboxRuntime
} from './types.ts'
