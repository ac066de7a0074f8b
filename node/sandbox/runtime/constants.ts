/*
 * The sandbox runtime's defaults: options of `sandboxRuntime(init)` (`init.x ?? DEFAULT_X`).
 * Measured on a 2-core machine (see /work/notes/sandbox-runtimes.md): a QuickJS worker costs
 * about 15 MiB RSS and 50-60 ms to start, a WASI worker about 80 ms (most of it wasmer's init).
 */

export const MiB = 1024 * 1024
/** a WebAssembly page */
export const WASM_PAGE_BYTES = 65536

/**
 * warm workers kept per language for quick runs. Python: none until the first Python run (a warm
 * pyodide costs 100-160 MiB of RSS), then one (python-runner.ts; every run replaces its worker)
 */
export const DEFAULT_POOL_SIZE: Readonly<Record<'js' | 'wasm' | 'python', number>> = { js: 2, wasm: 1, python: 0 }
/** the memory cap the warm JS pool is built for; quick runs with another cap get workers of their own */
export const DEFAULT_MEMORY_BYTES = 64 * MiB
/** workers at most, warm, running and persistent together; beyond it runs are refused with 429 */
export const DEFAULT_MAX_WORKERS = 32
/** idle quick-mode workers kept for memory caps other than the default one, over all such caps */
export const DEFAULT_MAX_IDLE_OTHER_CAPS = 4

/**
 * How long after its deadline a JS guest's worker is terminated. The QuickJS interrupt handler
 * ends ordinary loops at the deadline; only code stuck in one long C call (`new Array(1e9)+''`
 * joins for over a minute without polling it) needs the terminate.
 */
export const DEFAULT_TIMEOUT_GRACE_MS = 75
/** how long a cancelled run may take to stop on its own before its worker is terminated */
export const DEFAULT_CANCEL_GRACE_MS = 20

/**
 * QuickJS's emscripten build starts with 16 MiB of linear memory (its import declares 256 pages
 * as the minimum), so a JS guest cannot be capped below that; 4 MiB more leave it room to work.
 */
export const MIN_JS_MEMORY_BYTES = 20 * MiB
/**
 * pyodide's module declares 480 pages (30 MiB) as its initial memory, and the start snapshot
 * (the interpreter with its common modules imported) is about as large; 10 MiB more leave a
 * guest room to work.
 */
export const MIN_PYTHON_MEMORY_BYTES = 40 * MiB
/**
 * How long after its deadline a Python guest's worker is terminated. The interrupt buffer
 * raises KeyboardInterrupt within 4-36 ms in a busy loop; `time.sleep` is not interrupted.
 */
export const PYTHON_TIMEOUT_GRACE_MS = 250
/** bumped when what goes into Python's start snapshot changes (python-runner.ts WARM_UP): older snapshots are not used */
export const PYTHON_SNAPSHOT_REVISION = 1
/** the script name of a Python guest (`sys.argv[0]`, tracebacks) */
export const PYTHON_SCRIPT_NAME = '/main.py'
/** the smallest cap a WASI guest may have (one page) */
export const MIN_WASM_MEMORY_BYTES = WASM_PAGE_BYTES
/**
 * QuickJS's own allocation limit sits this far below the hard Memory maximum, so that QuickJS
 * reports `out of memory` as a catchable error before malloc fails in C code that would abort.
 * The part of the memory below the heap (static data and the 5 MiB C stack) is most of it.
 */
export const JS_SOFT_LIMIT_RESERVE_BYTES = 6 * MiB
/** QuickJS's own stack limit for guest recursion (workers have a 4 MiB native stack) */
export const JS_MAX_STACK_BYTES = 1 * MiB
/** the V8 heap of a worker (host-side glue only: guest memory is WebAssembly memory outside it) */
export const WORKER_MAX_OLD_GENERATION_MB = 96

/** bytes of live stdin the channel to a worker holds at once */
export const LIVE_STDIN_BUFFER_BYTES = 64 * 1024
/** argv[0] of a WASI guest, and the script name in a JS guest's `process.argv` */
export const WASI_PROGRAM_NAME = 'main.wasm'
export const JS_SCRIPT_NAME = '/main.js'
