import type { GuestWorker } from './guest-worker.ts'
import type { Language } from './types.ts'

type PooledLanguage = 'js' | 'wasm' | 'python'

export interface WarmPoolInit {
  /** warm workers kept per language for the default memory cap */
  sizes: Record<PooledLanguage, number>
  /** the cap the warm JS and Python workers are built for (WASI workers serve any cap: it is applied per module) */
  defaultMemoryBytes: number
  /** the smallest cap of a Python guest: below it no Python workers are kept warm */
  minPythonMemoryBytes: number
  /** idle JS workers kept for other caps, over all of them */
  maxIdleOtherCaps: number
  /**
   * false: a language's workers are kept warm only once it has been used (a warm JS worker costs
   * ~50 MiB of RSS, a WASI one ~35 MiB, a Python one 100-160 MiB); true: JS and WASI from the start
   */
  warmBeforeUse: boolean
  /** starts a quick-mode worker; undefined when no more workers may be started */
  spawn: (language: PooledLanguage, memoryBytes: number) => Promise<GuestWorker> | undefined
  onSpawnError: (language: Language, error: unknown) => void
}

/**
 * Idle quick-mode workers, each with a clean guest. A JS worker's memory cap is fixed when it
 * starts (the Memory's maximum), so JS workers are pooled per cap: the default cap is kept warm
 * at its size and refilled in the background; a worker for another cap is kept after its run
 * (a few of them, the oldest go first) so repeated runs with that cap are warm too.
 * Python workers are never given back (a run replaces its worker); the default cap is kept warm
 * at its size, and at one worker at least once a Python run has been taken (a warm pyodide
 * costs 100-160 MiB of RSS, so none is started before Python is used).
 */
export class WarmPool {
  private readonly idle = new Map<string, GuestWorker[]>()
  private readonly starting = new Map<string, number>()
  private stopped = false
  /** languages a quick run has asked for */
  private readonly used = new Set<PooledLanguage>()
  private readonly init: WarmPoolInit

  constructor (init: WarmPoolInit) {
    this.init = init
  }

  private key (language: PooledLanguage, memoryBytes: number): string {
    return language === 'wasm' ? 'wasm' : `${language}:${memoryBytes}`
  }

  /** warm workers wanted for the default cap */
  private size (language: PooledLanguage): number {
    const used = this.used.has(language)
    if (language !== 'python') return used || this.init.warmBeforeUse ? this.init.sizes[language] : 0
    if (this.init.defaultMemoryBytes < this.init.minPythonMemoryBytes) return 0
    return Math.max(this.init.sizes.python, used ? 1 : 0)
  }

  /** the idle list of a key, without workers that ended while they waited */
  private listFor (key: string): GuestWorker[] {
    let list = this.idle.get(key)
    if (list === undefined) {
      list = []
      this.idle.set(key, list)
    }
    for (let i = list.length - 1; i >= 0; i--) if (!list[i].usable) list.splice(i, 1)
    return list
  }

  private isDefault (key: string): boolean {
    return key === 'wasm' || key === `js:${this.init.defaultMemoryBytes}` || key === `python:${this.init.defaultMemoryBytes}`
  }

  /** an idle worker for this language and cap, if one is there */
  take (language: PooledLanguage, memoryBytes: number): GuestWorker | undefined {
    this.used.add(language)
    const worker = this.listFor(this.key(language, memoryBytes)).shift()
    // a Python worker starts in 0.3-1 s of busy CPU: started during the run, it took
    // CPU from it (start-to-first-output 40 ms instead of a few on 2 cores); the run's end refills
    if (language !== 'python' || worker === undefined) this.refill()
    return worker
  }

  /** a worker back from a clean run; kept if it is wanted, else ended */
  give (worker: GuestWorker): void {
    const language = worker.language as PooledLanguage
    const key = this.key(language, worker.memoryBytes)
    const list = this.listFor(key)
    const wanted = this.isDefault(key) ? this.size(language) : 1
    if (this.stopped || !worker.usable || list.length >= wanted) {
      void worker.terminate()
      return
    }
    list.push(worker)
    if (!this.isDefault(key)) this.evictOtherCaps()
  }

  /** starts workers (in the background) until the default pools are at their size */
  refill (): void {
    if (this.stopped) return
    for (const language of ['js', 'wasm', 'python'] as const) {
      const key = this.key(language, this.init.defaultMemoryBytes)
      const list = this.listFor(key)
      const missing = this.size(language) - list.length - (this.starting.get(key) ?? 0)
      for (let i = 0; i < missing; i++) {
        const started = this.init.spawn(language, this.init.defaultMemoryBytes)
        if (started === undefined) return
        this.starting.set(key, (this.starting.get(key) ?? 0) + 1)
        started.then((worker) => {
          if (this.stopped) void worker.terminate()
          else this.listFor(key).push(worker)
        }, (error: unknown) => { this.init.onSpawnError(language, error) }).finally(() => {
          this.starting.set(key, (this.starting.get(key) ?? 1) - 1)
        })
      }
    }
  }

  /** resolves when no worker is starting any more */
  async settled (): Promise<void> {
    while ([...this.starting.values()].some(count => count > 0)) await new Promise(resolve => setTimeout(resolve, 5))
  }

  idleCount (language: Language): number {
    let count = 0
    for (const [key, list] of this.idle) {
      if (key.split(':')[0] === language) count += list.filter(worker => worker.usable).length
    }
    return count
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.settled()
    const all = [...this.idle.values()].flat()
    this.idle.clear()
    await Promise.all(all.map(async worker => { await worker.terminate() }))
  }

  private evictOtherCaps (): void {
    const others = [...this.idle].filter(([key]) => !this.isDefault(key))
    let count = others.reduce((sum, [, list]) => sum + list.length, 0)
    for (const [, list] of others) {
      while (count > this.init.maxIdleOtherCaps && list.length > 0) {
        void list.shift()?.terminate()
        count--
      }
    }
  }
}
