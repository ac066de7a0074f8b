import type { Logger } from 'pino'
import { BkgError } from '../../../lib/bkg-error.ts'
import {
  DEFAULT_CANCEL_GRACE_MS, DEFAULT_MAX_IDLE_OTHER_CAPS, DEFAULT_MAX_WORKERS, DEFAULT_MEMORY_BYTES, DEFAULT_POOL_SIZE,
  DEFAULT_TIMEOUT_GRACE_MS, MIN_JS_MEMORY_BYTES, MIN_PYTHON_MEMORY_BYTES, MIN_WASM_MEMORY_BYTES, WASM_PAGE_BYTES
} from './constants.ts'
import { GuestWorker } from './guest-worker.ts'
import type { GuestWorkerTiming } from './guest-worker.ts'
import { WorkerPersistentGuest } from './persistent-guest.ts'
import { compileQuickJs } from './quickjs-wasm.ts'
import { WarmPool } from './warm-pool.ts'
import { cappedPyodideDir, defaultPythonCacheDir, pythonSnapshotPath } from './python-assets.ts'
import type { Language, PersistentGuest, RunOptions, RunRequest, RunResult, RuntimeStats, SandboxImage, SandboxRuntime } from './types.ts'
import type { PythonAssets, WorkerMode } from './worker-protocol.ts'
import type { WasmModule } from './webassembly.ts'

type RunnableLanguage = Language

export interface SandboxRuntimeInit {
  /**
   * warm quick-mode workers per language (defaults: js 2, wasm 1, python 0; python keeps one warm
   * once it has been used: a warm pyodide costs 100-160 MiB of RSS)
   */
  poolSize?: Partial<Record<RunnableLanguage, number>>
  /** the memory cap the warm JS workers are built for; runs with this cap start warm */
  memoryBytes?: number
  /** workers at most (warm, running and persistent); more runs are refused with 429 */
  maxWorkers?: number
  /** idle JS workers kept for caps other than the default one */
  maxIdleOtherCaps?: number
  /** how long after its deadline a JS guest's worker is terminated */
  timeoutGraceMs?: number
  /** how long a cancelled JS run may take to stop before its worker is terminated */
  cancelGraceMs?: number
  /**
   * where Python's assets are kept: a pyodide directory per memory cap (its wasm with the memory
   * maximum rewritten) and the start snapshot (default: os.tmpdir()/bkg-pyodide-<version>)
   */
  cacheDir?: string
  /**
   * keep JS and WASI workers warm from the start (default); false: only once the language has
   * been used (a node that never runs WASI carries no WASI worker)
   */
  warmBeforeUse?: boolean
}

export interface SandboxRuntimeComponents {
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>
}

function runnable (language: Language): RunnableLanguage {
  if (language !== 'js' && language !== 'wasm' && language !== 'python') throw new BkgError('invalid_input', 400, `unknown language ${String(language)}`)
  return language
}

function checkMemoryCap (language: RunnableLanguage, memoryBytes: number): number {
  if (!Number.isFinite(memoryBytes)) throw new BkgError('invalid_limits', 400, 'memoryBytes must be a number')
  const pages = Math.floor(memoryBytes / WASM_PAGE_BYTES) * WASM_PAGE_BYTES
  const minimum = language === 'js' ? MIN_JS_MEMORY_BYTES : language === 'python' ? MIN_PYTHON_MEMORY_BYTES : MIN_WASM_MEMORY_BYTES
  if (pages < minimum) throw new BkgError('invalid_limits', 400, `a ${language} guest needs a memory cap of at least ${minimum} bytes`)
  return pages
}

function checkRequest (language: RunnableLanguage, request: RunRequest): void {
  const { timeoutMs, outputBytes } = request.limits ?? {}
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new BkgError('invalid_limits', 400, 'timeoutMs must be a positive number')
  if (!(Number.isFinite(outputBytes) && outputBytes >= 0)) throw new BkgError('invalid_limits', 400, 'outputBytes must be a number of bytes')
  if (language !== 'wasm' && typeof request.code !== 'string') throw new BkgError('invalid_input', 400, `a ${language} run needs code`)
  if (language === 'wasm' && !(request.module instanceof Uint8Array)) throw new BkgError('invalid_input', 400, 'a wasm run needs a module')
}

/**
 * The sandbox runtime: guests in worker threads, a warm pool for quick runs, persistent guests
 * with memory images. See index.ts for its use.
 */
export class WorkerSandboxRuntime implements SandboxRuntime {
  private readonly log: SandboxRuntimeComponents['log']
  private readonly defaultMemoryBytes: number
  private readonly maxWorkers: number
  private readonly timing: GuestWorkerTiming
  private readonly pool: WarmPool
  private readonly live = new Set<GuestWorker>()
  private readonly persistent = new Set<PersistentGuest>()
  private quickjsModule: Promise<WasmModule> | undefined
  private started = false
  private running = 0
  /** workers being started, counted with the live ones against maxWorkers */
  private startingWorkers = 0
  private replaced = 0
  private readonly cacheDir: string
  /** pyodide directories per memory cap */
  private readonly pythonDirs = new Map<number, Promise<string>>()
  /** the first Python worker's start: it makes the start snapshot when there is none, the others wait for it */
  private firstPython: Promise<unknown> | undefined

  constructor (components: SandboxRuntimeComponents, init: SandboxRuntimeInit) {
    this.log = components.log
    this.defaultMemoryBytes = checkMemoryCap('js', init.memoryBytes ?? DEFAULT_MEMORY_BYTES)
    this.maxWorkers = init.maxWorkers ?? DEFAULT_MAX_WORKERS
    this.cacheDir = init.cacheDir ?? defaultPythonCacheDir()
    this.timing = {
      timeoutGraceMs: init.timeoutGraceMs ?? DEFAULT_TIMEOUT_GRACE_MS,
      cancelGraceMs: init.cancelGraceMs ?? DEFAULT_CANCEL_GRACE_MS
    }
    this.pool = new WarmPool({
      sizes: { ...DEFAULT_POOL_SIZE, ...init.poolSize },
      defaultMemoryBytes: this.defaultMemoryBytes,
      minPythonMemoryBytes: MIN_PYTHON_MEMORY_BYTES,
      maxIdleOtherCaps: init.maxIdleOtherCaps ?? DEFAULT_MAX_IDLE_OTHER_CAPS,
      warmBeforeUse: init.warmBeforeUse ?? true,
      spawn: (language, memoryBytes) => this.workerCount() < this.maxWorkers ? this.spawn(language, 'quick', memoryBytes) : undefined,
      onSpawnError: (language, error) => { this.log.warn({ err: error, language }, 'sandbox worker failed to start') }
    })
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    this.quickjsModule = compileQuickJs()
    await this.quickjsModule
    this.pool.refill()
    await this.pool.settled()
    this.log.info({ idle: this.stats().idle }, 'sandbox runtime started')
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.pool.stop()
    await Promise.all([...this.persistent].map(async guest => { await guest.close() }))
    await Promise.all([...this.live].map(async worker => { await worker.terminate() }))
  }

  async runOnce (language: Language, request: RunRequest, options: RunOptions = {}): Promise<RunResult> {
    const lang = runnable(language)
    this.ensureStarted()
    checkRequest(lang, request)
    const memoryBytes = checkMemoryCap(lang, request.limits.memoryBytes)
    const worker = this.pool.take(lang, memoryBytes) ?? await this.spawnOrRefuse(lang, 'quick', memoryBytes)
    this.running++
    let recycle = true
    try {
      const ran = await worker.run(request, options, this.timing)
      recycle = ran.recycle
      return ran.result
    } finally {
      this.running--
      recycle ||= !worker.usable
      if (recycle) {
        this.replaced++
        void worker.terminate()
      } else {
        this.pool.give(worker)
      }
      this.pool.refill()
    }
  }

  async openPersistent (language: Language, init: { memoryBytes: number, image?: SandboxImage }): Promise<PersistentGuest> {
    const lang = runnable(language)
    this.ensureStarted()
    const memoryBytes = checkMemoryCap(lang, init.memoryBytes)
    const spawn = async (): Promise<GuestWorker> => await this.spawnOrRefuse(lang, 'persistent', memoryBytes)
    const guest: PersistentGuest = new WorkerPersistentGuest(await spawn(), {
      language: lang,
      memoryBytes,
      timing: this.timing,
      spawn,
      onReplaced: () => { this.replaced++ },
      onClose: () => { this.persistent.delete(guest) }
    })
    this.persistent.add(guest)
    if (init.image !== undefined) {
      try {
        await guest.restore(init.image)
      } catch (error) {
        await guest.close()
        throw error
      }
    }
    return guest
  }

  stats (): RuntimeStats {
    return {
      idle: { js: this.pool.idleCount('js'), wasm: this.pool.idleCount('wasm'), python: this.pool.idleCount('python') },
      running: this.running,
      replaced: this.replaced
    }
  }

  private workerCount (): number {
    return this.live.size + this.startingWorkers
  }

  private ensureStarted (): void {
    if (!this.started) throw new BkgError('sandbox_runtime_stopped', 503, 'the sandbox runtime is not running')
  }

  private async pythonAssets (memoryBytes: number): Promise<PythonAssets> {
    let dir = this.pythonDirs.get(memoryBytes)
    if (dir === undefined) {
      dir = cappedPyodideDir(this.cacheDir, memoryBytes)
      this.pythonDirs.set(memoryBytes, dir)
      dir.catch(() => { this.pythonDirs.delete(memoryBytes) })
    }
    return { indexURL: await dir, snapshotPath: pythonSnapshotPath(this.cacheDir) }
  }

  private async spawnOrRefuse (language: RunnableLanguage, mode: WorkerMode, memoryBytes: number): Promise<GuestWorker> {
    if (this.workerCount() >= this.maxWorkers) {
      throw new BkgError('sandbox_capacity', 429, `all ${this.maxWorkers} sandbox workers are in use`)
    }
    return await this.spawn(language, mode, memoryBytes)
  }

  private async spawn (language: RunnableLanguage, mode: WorkerMode, memoryBytes: number): Promise<GuestWorker> {
    this.startingWorkers++
    let worker: GuestWorker
    try {
      const quickjsModule = language === 'js' ? await this.quickjsModule : undefined
      if (language === 'python') {
        const python = await this.pythonAssets(memoryBytes)
        const first = this.firstPython
        if (first !== undefined) await first.catch(() => {})
        const starting = GuestWorker.start({ language, mode, memoryBytes, python })
        // until one Python worker has started, the next ones wait (it may be making the start snapshot)
        if (first === undefined) this.firstPython = starting.catch((error: unknown) => { this.firstPython = undefined; throw error })
        worker = await starting
      } else {
        worker = await GuestWorker.start({ language, mode, memoryBytes, quickjsModule })
      }
    } finally {
      this.startingWorkers--
    }
    this.live.add(worker)
    void worker.exited.then(() => { this.live.delete(worker) })
    return worker
  }
}

/** the runtime as a service: `sandboxRuntime(init)(components)` */
export function sandboxRuntime (init: SandboxRuntimeInit = {}): (components: SandboxRuntimeComponents) => SandboxRuntime {
  return (components) => new WorkerSandboxRuntime(components, init)
}
