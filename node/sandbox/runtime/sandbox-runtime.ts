import type { Logger } from 'pino'
import { BkgError } from '../../../lib/bkg-error.ts'
import {
  DEFAULT_CANCEL_GRACE_MS, DEFAULT_MAX_IDLE_OTHER_CAPS, DEFAULT_MAX_WORKERS, DEFAULT_MEMORY_BYTES, DEFAULT_POOL_SIZE,
  DEFAULT_TIMEOUT_GRACE_MS, MIN_JS_MEMORY_BYTES, MIN_WASM_MEMORY_BYTES, WASM_PAGE_BYTES
} from './constants.ts'
import { GuestWorker } from './guest-worker.ts'
import type { GuestWorkerTiming } from './guest-worker.ts'
import { WorkerPersistentGuest } from './persistent-guest.ts'
import { compileQuickJs } from './quickjs-wasm.ts'
import { WarmPool } from './warm-pool.ts'
import type { Language, PersistentGuest, RunOptions, RunRequest, RunResult, RuntimeStats, SandboxImage, SandboxRuntime } from './types.ts'
import type { WorkerMode } from './worker-protocol.ts'
import type { WasmModule } from './webassembly.ts'

type RunnableLanguage = 'js' | 'wasm'

export interface SandboxRuntimeInit {
  /** warm quick-mode workers per language (defaults: js 2, wasm 1) */
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
}

export interface SandboxRuntimeComponents {
  log: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>
}

function runnable (language: Language): RunnableLanguage {
  if (language === 'python') throw new BkgError('language_unavailable', 501, 'Python sandboxes are not available yet')
  if (language !== 'js' && language !== 'wasm') throw new BkgError('invalid_input', 400, `unknown language ${String(language)}`)
  return language
}

function checkMemoryCap (language: RunnableLanguage, memoryBytes: number): number {
  if (!Number.isFinite(memoryBytes)) throw new BkgError('invalid_limits', 400, 'memoryBytes must be a number')
  const pages = Math.floor(memoryBytes / WASM_PAGE_BYTES) * WASM_PAGE_BYTES
  const minimum = language === 'js' ? MIN_JS_MEMORY_BYTES : MIN_WASM_MEMORY_BYTES
  if (pages < minimum) throw new BkgError('invalid_limits', 400, `a ${language} guest needs a memory cap of at least ${minimum} bytes`)
  return pages
}

function checkRequest (language: RunnableLanguage, request: RunRequest): void {
  const { timeoutMs, outputBytes } = request.limits ?? {}
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new BkgError('invalid_limits', 400, 'timeoutMs must be a positive number')
  if (!(Number.isFinite(outputBytes) && outputBytes >= 0)) throw new BkgError('invalid_limits', 400, 'outputBytes must be a number of bytes')
  if (language === 'js' && typeof request.code !== 'string') throw new BkgError('invalid_input', 400, 'a js run needs code')
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

  constructor (components: SandboxRuntimeComponents, init: SandboxRuntimeInit) {
    this.log = components.log
    this.defaultMemoryBytes = checkMemoryCap('js', init.memoryBytes ?? DEFAULT_MEMORY_BYTES)
    this.maxWorkers = init.maxWorkers ?? DEFAULT_MAX_WORKERS
    this.timing = {
      timeoutGraceMs: init.timeoutGraceMs ?? DEFAULT_TIMEOUT_GRACE_MS,
      cancelGraceMs: init.cancelGraceMs ?? DEFAULT_CANCEL_GRACE_MS
    }
    this.pool = new WarmPool({
      sizes: { ...DEFAULT_POOL_SIZE, ...init.poolSize },
      defaultMemoryBytes: this.defaultMemoryBytes,
      maxIdleOtherCaps: init.maxIdleOtherCaps ?? DEFAULT_MAX_IDLE_OTHER_CAPS,
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
      idle: { js: this.pool.idleCount('js'), wasm: this.pool.idleCount('wasm'), python: 0 },
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
      worker = await GuestWorker.start({ language, mode, memoryBytes, quickjsModule })
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
