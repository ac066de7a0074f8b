// The ESM entry points matter: through the CommonJS build (require) the variant ignores a given
// wasmMemory and creates its own with a 2 GiB maximum (seen here), and the cap would be gone.
import { newQuickJSWASMModuleFromVariant, newVariant } from 'quickjs-emscripten-core'
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime, QuickJSSyncVariant } from 'quickjs-emscripten-core'
import RELEASE_SYNC_EXPORT from '@jitl/quickjs-wasmfile-release-sync'
import { BkgError } from '../../../lib/bkg-error.ts'
import {
  JS_MAX_STACK_BYTES, JS_SCRIPT_NAME, JS_SOFT_LIMIT_RESERVE_BYTES, MIN_JS_MEMORY_BYTES, MiB, WASM_PAGE_BYTES
} from './constants.ts'
import { JS_GUEST_PRELUDE } from './js-guest-prelude.ts'
import { STREAM_STDERR, STREAM_STDOUT, CONTROL_STOP, STOP_NONE } from './worker-protocol.ts'
import type { GuestIO, StreamId } from './guest-io.ts'
import type { CreateRunner, GuestRunner, RunnerInit, RunnerOutcome } from './runner.ts'
import type { RunJob, RunOutcome, WorkerImage } from './worker-protocol.ts'
import { Wasm } from './webassembly.ts'
import type { WasmMemory } from './webassembly.ts'

// the package's types are CommonJS (a namespace with `default`); its ESM build, which Node loads, exports the variant itself
const RELEASE_SYNC = RELEASE_SYNC_EXPORT as unknown as QuickJSSyncVariant

/** QuickJS's emscripten build imports a memory of at least this many pages (16 MiB) */
const QUICKJS_INITIAL_PAGES = 256
/** the control object's methods (js-guest-prelude.ts) */
const CONTROL_METHODS = ['begin', 'putFile', 'changedFiles', 'allFiles', 'fileBytes', 'exitCode', 'nextTimerDelay', 'runDueTimer'] as const
type ControlMethod = typeof CONTROL_METHODS[number]
/**
 * Run once at setup, before any image: V8 compiles QuickJS's functions lazily in each worker,
 * so a guest's first run paid 4-12 ms more than later ones here. Deterministic (no clock or
 * randomness), so every guest set up with it has the same heap layout; its output goes nowhere.
 */
const WARM_UP = `(function () {
  const o = { a: [1, 'x', { b: null }], m: new Map([[1, 2]]), s: new Set([1]), d: 1.5 }
  console.log(o, 'text', 42n); console.error(new Error('warm-up'))
  JSON.parse(JSON.stringify(o)); [3, 1, 2].sort().map(String).join(','); /a+b/.test('aab'); 'abc'.replace(/b/g, 'x')
  fs.writeFile('/warm-up', 'x'); fs.readFile('/warm-up', 'utf8'); fs.readdir('/'); fs.unlink('/warm-up')
  new TextDecoder().decode(new TextEncoder().encode('é'))
  Promise.resolve(1).then(x => x * 2); (async () => { await null })()
  try { null.x } catch (e) { String(e) }
})()`
/** how long host calls into the guest outside a run (image, files) may take before QuickJS interrupts them */
const HOST_CALL_BUDGET_MS = 2000

type GuestError = NonNullable<RunOutcome['error']>

const encoder = new TextEncoder()
const decoder = new TextDecoder()

function isOutOfMemory (error: GuestError): boolean {
  return error.name === 'InternalError' && error.message === 'out of memory'
}

/**
 * A JavaScript guest: QuickJS in its own `WebAssembly.Memory` whose maximum is the memory cap.
 * The setup (module, runtime, context, host functions, the guest prelude) is the same in every
 * worker with the same cap, so the heap pointers come out identical: a memory image taken in one
 * guest can be copied into another, which is how quick runs are reset and persistent guests are
 * restored and forked. Host-side objects that point into the heap are all made during setup,
 * before any image; nothing made later survives a restore.
 */
class JsRunner implements GuestRunner {
  private io: GuestIO | undefined
  private hostCallDeadline = 0
  private readonly control: QuickJSHandle
  private readonly methods: Record<ControlMethod, QuickJSHandle>
  /** the heap right after setup (quick mode): what every run starts from */
  private readonly cleanImage: Uint8Array | undefined

  private readonly memory: WasmMemory
  private readonly runtime: QuickJSRuntime
  private readonly context: QuickJSContext
  private readonly capBytes: number

  private constructor (memory: WasmMemory, runtime: QuickJSRuntime, context: QuickJSContext, capBytes: number, quick: boolean) {
    this.memory = memory
    this.runtime = runtime
    this.context = context
    this.capBytes = capBytes
    runtime.setMemoryLimit(capBytes - JS_SOFT_LIMIT_RESERVE_BYTES)
    runtime.setMaxStackSize(JS_MAX_STACK_BYTES)
    // registered once, before any image: it reads the current run through `this`
    runtime.setInterruptHandler(() => this.io !== undefined ? this.io.shouldStop() : Date.now() > this.hostCallDeadline)
    void context.global // cached on the host side: it must exist before the first image
    this.installHost()
    this.hostCallDeadline = Date.now() + HOST_CALL_BUDGET_MS
    this.control = context.unwrapResult(context.evalCode(JS_GUEST_PRELUDE, 'bkg-prelude.js', { type: 'global' }))
    this.methods = Object.fromEntries(CONTROL_METHODS.map(name => [name, context.getProp(this.control, name)])) as Record<ControlMethod, QuickJSHandle>
    this.settle(context.evalCode(WARM_UP, 'bkg-warm-up.js', { type: 'global' }))
    runtime.executePendingJobs().dispose()
    this.cleanImage = quick ? new Uint8Array(memory.buffer).slice() : undefined
  }

  static async create (init: RunnerInit): Promise<JsRunner> {
    if (init.memoryBytes < MIN_JS_MEMORY_BYTES) {
      throw new BkgError('invalid_limits', 400, `a JavaScript guest needs a memory cap of at least ${MIN_JS_MEMORY_BYTES / MiB} MiB`)
    }
    const memory = new Wasm.Memory({ initial: QUICKJS_INITIAL_PAGES, maximum: Math.floor(init.memoryBytes / WASM_PAGE_BYTES) })
    const variant = newVariant(RELEASE_SYNC, init.quickjsModule !== undefined ? { wasmMemory: memory, wasmModule: init.quickjsModule } : { wasmMemory: memory })
    const module = await newQuickJSWASMModuleFromVariant(variant)
    if (module.getWasmMemory() !== memory) throw new Error('QuickJS did not take the capped memory')
    const runtime = module.newRuntime()
    return new JsRunner(memory, runtime, runtime.newContext(), init.memoryBytes, init.mode === 'quick')
  }

  run (job: RunJob, io: GuestIO): RunnerOutcome {
    const context = this.context
    this.io = io
    try {
      let error = this.call('begin', [JSON.stringify(['quickjs', JS_SCRIPT_NAME, ...job.args]), JSON.stringify(job.env)])
      for (const [path, content] of Object.entries(job.files)) {
        error ??= this.call('putFile', [path, content])
      }
      if (error === undefined) {
        const evaluated = context.evalCode(job.code ?? '', JS_SCRIPT_NAME, { type: 'global' })
        error = this.settle(evaluated)
      }
      error ??= this.runJobsAndTimers(io)
      return this.outcome(io, error)
    } catch (hostError) {
      // QuickJS failed on the host side (an abort, a trap): the module is not to be trusted again
      const atCap = this.memory.buffer.byteLength + WASM_PAGE_BYTES > this.capBytes
      const reason = io.stopReason ?? (atCap ? 'memory' : undefined)
      const message = hostError instanceof Error ? hostError.message.split('\n')[0].slice(0, 500) : String(hostError)
      return {
        exitCode: null,
        ...(reason !== undefined ? { reason } : { error: { name: 'InternalError', message: `the JavaScript runtime failed: ${message}` } }),
        cpuMs: 0,
        memoryBytes: this.memory.buffer.byteLength,
        files: {},
        recycle: true
      }
    } finally {
      this.io = undefined
    }
  }

  reset (): boolean {
    const clean = this.cleanImage
    if (clean === undefined || this.memory.buffer.byteLength !== clean.byteLength) return false
    new Uint8Array(this.memory.buffer).set(clean)
    return true
  }

  image (): WorkerImage {
    return { memory: new Uint8Array(this.memory.buffer).slice(), files: this.readFiles(this.listFiles('allFiles')) }
  }

  restore (image: WorkerImage): void {
    const memory = image.memory
    if (memory === null) throw new BkgError('invalid_image', 422, 'a JavaScript image must hold a memory')
    if (memory.byteLength % WASM_PAGE_BYTES !== 0 || memory.byteLength < QUICKJS_INITIAL_PAGES * WASM_PAGE_BYTES) {
      throw new BkgError('invalid_image', 422, 'the image is not a QuickJS memory')
    }
    if (memory.byteLength > this.capBytes) {
      throw new BkgError('invalid_image', 422, `the image (${memory.byteLength} bytes) is larger than this guest's memory cap (${this.capBytes})`)
    }
    this.growTo(memory.byteLength)
    const heap = new Uint8Array(this.memory.buffer)
    heap.set(memory)
    // memory cannot shrink: what lies past the image is zeroed, as it was in the guest it came from
    heap.fill(0, memory.byteLength)
  }

  /**
   * Grows the memory from inside QuickJS: emscripten keeps views of the memory that it renews
   * only when it grows the memory itself, so growing it from here would leave them detached.
   * What is allocated is overwritten by the image a moment later.
   */
  private growTo (bytes: number): void {
    if (this.memory.buffer.byteLength >= bytes) return
    this.runtime.setMemoryLimit(-1)
    const held: QuickJSHandle[] = []
    try {
      while (this.memory.buffer.byteLength < bytes) {
        const result = this.context.evalCode(`new ArrayBuffer(${MiB})`)
        if (result.error !== undefined) {
          result.error.dispose()
          break
        }
        held.push(result.value)
      }
    } finally {
      for (const handle of held) handle.dispose()
      this.runtime.setMemoryLimit(this.capBytes - JS_SOFT_LIMIT_RESERVE_BYTES)
    }
    if (this.memory.buffer.byteLength < bytes) throw new BkgError('invalid_image', 422, 'the guest memory could not grow to the image size')
  }

  /** the host functions the prelude takes from `__bkgHost` */
  private installHost (): void {
    const context = this.context
    const host = context.newObject()
    const define = (name: string, fn: (...args: QuickJSHandle[]) => QuickJSHandle | undefined): void => {
      const handle = context.newFunction(name, fn)
      context.setProp(host, name, handle)
      handle.dispose()
    }
    define('write', (stream, data) => {
      const io = this.io
      if (io === undefined) return context.false
      const id: StreamId = context.getNumber(stream) === STREAM_STDERR ? STREAM_STDERR : STREAM_STDOUT
      return io.write(id, this.bytesOf(data)) ? context.true : context.false
    })
    define('readStdin', () => {
      const chunk = this.io?.readStdin() ?? null
      return chunk === null ? context.undefined : context.newArrayBuffer(ownBuffer(chunk))
    })
    define('exit', (code) => {
      this.io?.exit(context.getNumber(code))
      return context.undefined
    })
    define('encodeUtf8', (text) => context.newArrayBuffer(ownBuffer(encoder.encode(context.getString(text)))))
    define('decodeUtf8', (buffer) => context.newString(decoder.decode(this.bytesOf(buffer))))
    context.setProp(context.global, '__bkgHost', host)
    host.dispose()
  }

  /** a guest string (as UTF-8) or ArrayBuffer, copied out of the heap */
  private bytesOf (handle: QuickJSHandle): Uint8Array {
    const context = this.context
    if (context.typeof(handle) === 'string') return encoder.encode(context.getString(handle))
    try {
      const view = context.getArrayBuffer(handle)
      try {
        return view.value.slice()
      } finally {
        view.dispose()
      }
    } catch {
      return encoder.encode(String(context.dump(handle)))
    }
  }

  /** calls a control method; returns the guest's exception, if any (and disposes the result) */
  private call (method: ControlMethod, args: Array<string | Uint8Array>): GuestError | undefined {
    const context = this.context
    const handles = args.map(arg => typeof arg === 'string' ? context.newString(arg) : context.newArrayBuffer(ownBuffer(arg)))
    try {
      return this.settle(context.callFunction(this.methods[method], this.control, ...handles))
    } finally {
      for (const handle of handles) handle.dispose()
    }
  }

  /** calls a control method for its value, as plain data */
  private value (method: ControlMethod, args: string[] = []): unknown {
    const context = this.context
    const handles = args.map(arg => context.newString(arg))
    try {
      const result = context.callFunction(this.methods[method], this.control, ...handles)
      if (result.error !== undefined) {
        result.error.dispose()
        return undefined
      }
      if (method === 'fileBytes') {
        const bytes = context.typeof(result.value) === 'object' ? this.bytesOf(result.value) : undefined
        result.value.dispose()
        return bytes
      }
      const plain: unknown = context.dump(result.value)
      result.value.dispose()
      return plain
    } finally {
      for (const handle of handles) handle.dispose()
    }
  }

  private settle (result: ReturnType<QuickJSContext['evalCode']>): GuestError | undefined {
    if (result.error === undefined) {
      result.value.dispose()
      return undefined
    }
    const thrown: unknown = this.context.dump(result.error)
    result.error.dispose()
    return toGuestError(thrown)
  }

  /** promise jobs, then timers (waiting for the next one), until nothing is left or the run must stop */
  private runJobsAndTimers (io: GuestIO): GuestError | undefined {
    for (;;) {
      const jobs = this.runtime.executePendingJobs()
      if (jobs.error !== undefined) {
        const thrown: unknown = jobs.error.context.dump(jobs.error)
        jobs.error.dispose()
        return toGuestError(thrown)
      }
      if (io.shouldStop()) return undefined
      const delay = this.value('nextTimerDelay')
      if (typeof delay !== 'number' || delay < 0) return undefined
      if (delay > 0) {
        // sleeps until the timer is due, the deadline passes or the run is cancelled (the control word is notified)
        const wait = Math.min(delay, Math.max(0, io.deadline - Date.now()) + 1)
        Atomics.wait(io.control, CONTROL_STOP, STOP_NONE, wait)
        continue
      }
      const error = this.call('runDueTimer', [])
      if (error !== undefined) return error
    }
  }

  private outcome (io: GuestIO, error: GuestError | undefined): RunnerOutcome {
    // a quick guest that grew the memory is replaced rather than reset: memory cannot shrink, so idle workers would keep it
    const grown = this.cleanImage !== undefined && this.memory.buffer.byteLength !== this.cleanImage.byteLength
    const common = { cpuMs: 0, memoryBytes: this.memory.buffer.byteLength, recycle: grown }
    if (io.exitCode !== undefined) {
      return { ...common, exitCode: io.exitCode, ...io.filesWithinLimit(this.changedFiles()) }
    }
    if (io.stopReason !== undefined) return { ...common, exitCode: null, reason: io.stopReason, files: {} }
    if (error !== undefined && isOutOfMemory(error)) return { ...common, exitCode: null, reason: 'memory', files: {} }
    if (error !== undefined) {
      io.write(STREAM_STDERR, encoder.encode(`Uncaught ${error.name}: ${error.message}\n${error.stack ?? ''}`))
      return { ...common, exitCode: 1, error, ...io.filesWithinLimit(this.changedFiles()) }
    }
    const exitCode = this.value('exitCode')
    return { ...common, exitCode: typeof exitCode === 'number' ? exitCode | 0 : 0, ...io.filesWithinLimit(this.changedFiles()) }
  }

  private changedFiles (): Array<[string, Uint8Array]> {
    return Object.entries(this.readFiles(this.listFiles('changedFiles')))
  }

  private listFiles (method: 'changedFiles' | 'allFiles'): string[] {
    this.hostCallDeadline = Date.now() + HOST_CALL_BUDGET_MS
    const paths = this.value(method)
    return Array.isArray(paths) ? paths.filter((path): path is string => typeof path === 'string') : []
  }

  private readFiles (paths: string[]): Record<string, Uint8Array> {
    const files: Record<string, Uint8Array> = {}
    for (const path of paths) {
      const bytes = this.value('fileBytes', [path])
      if (bytes instanceof Uint8Array) files[path] = bytes
    }
    return files
  }
}

/** an ArrayBuffer holding exactly these bytes (the view's own when it spans all of it) */
function ownBuffer (bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? bytes.buffer
    : bytes.slice().buffer
}

/** what QuickJS's dump of a thrown value says, as an error (guests may throw anything) */
function toGuestError (thrown: unknown): GuestError {
  if (typeof thrown === 'object' && thrown !== null && 'message' in thrown) {
    const { name, message, stack } = thrown as { name?: unknown, message?: unknown, stack?: unknown }
    return {
      name: typeof name === 'string' ? name : 'Error',
      message: String(message),
      ...(typeof stack === 'string' ? { stack } : {})
    }
  }
  return { name: 'Error', message: typeof thrown === 'string' ? thrown : JSON.stringify(thrown) ?? String(thrown) }
}

export const createRunner: CreateRunner = async (init) => await JsRunner.create(init)
