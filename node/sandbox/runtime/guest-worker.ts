import { Worker } from 'node:worker_threads'
import { BkgError } from '../../../lib/bkg-error.ts'
import { PYTHON_TIMEOUT_GRACE_MS, WORKER_MAX_OLD_GENERATION_MB } from './constants.ts'
import { createLiveStdinBuffer, LiveStdinWriter } from './live-stdin.ts'
import { CONTROL_STOP, STOP_CANCEL, STOP_NONE, STREAM_STDERR } from './worker-protocol.ts'
import type { WasmModule } from './webassembly.ts'
import type { Language, RunOptions, RunRequest, RunResult } from './types.ts'
import type { FromWorker, PythonAssets, RunJob, RunOutcome, WorkerError, WorkerImage, WorkerInit, WorkerMode } from './worker-protocol.ts'

const WORKER_URL = new URL('./worker-main.ts', import.meta.url)

export interface GuestWorkerSpec {
  language: Language
  mode: WorkerMode
  memoryBytes: number
  quickjsModule?: WasmModule
  python?: PythonAssets
}

export interface GuestWorkerTiming {
  /** how long after a run's deadline its worker is terminated */
  timeoutGraceMs: number
  /** how long a cancelled run may take to stop before its worker is terminated */
  cancelGraceMs: number
}

function toError (error: WorkerError): Error {
  return error.code !== undefined && error.status !== undefined
    ? new BkgError(error.code, error.status, error.message)
    : new Error(`sandbox worker: ${error.message}`)
}

/** the memory of a restore request moves to the worker instead of being cloned */
function transferOf (request: unknown): ArrayBuffer[] {
  const memory = (request as { type?: string, image?: WorkerImage }).image?.memory
  return memory instanceof Uint8Array && memory.buffer instanceof ArrayBuffer ? [memory.buffer] : []
}

/**
 * The main thread's handle on one sandbox worker: starts it, sends it one request at a time,
 * streams a run's output to the caller, and enforces what the guest cannot be trusted to: the
 * deadline (terminate after timeout + grace), cancellation, and a worker that dies. Nothing heavy
 * happens here: the guest runs in the worker, the main thread only moves messages and timers.
 */
export class GuestWorker {
  readonly language: Language
  readonly mode: WorkerMode
  readonly memoryBytes: number
  /** false once the worker has exited or must not serve again */
  usable = true
  private busy = false
  private readonly worker: Worker
  private readonly control: Int32Array
  /** resolves when the worker thread has ended */
  readonly exited: Promise<void>
  private listener: ((message: FromWorker) => void) | undefined
  private onExit: ((error: Error | undefined) => void) | undefined

  private constructor (spec: GuestWorkerSpec) {
    this.language = spec.language
    this.mode = spec.mode
    this.memoryBytes = spec.memoryBytes
    const control = new SharedArrayBuffer(4)
    this.control = new Int32Array(control)
    const workerData: WorkerInit = { language: spec.language, mode: spec.mode, memoryBytes: spec.memoryBytes, quickjsModule: spec.quickjsModule, python: spec.python, control }
    this.worker = new Worker(WORKER_URL, {
      workerData,
      // the V8 heap holds only host-side glue; guest memory is WebAssembly memory, capped by its maximum
      resourceLimits: { maxOldGenerationSizeMb: WORKER_MAX_OLD_GENERATION_MB },
      stdout: false,
      stderr: false
    })
    this.worker.on('message', (message: FromWorker) => this.listener?.(message))
    let workerError: Error | undefined
    this.worker.on('error', (error) => { workerError = error })
    this.exited = new Promise(resolve => {
      this.worker.on('exit', () => {
        this.usable = false
        this.onExit?.(workerError)
        resolve()
      })
    })
  }

  /** a worker with its guest set up, ready to run */
  static async start (spec: GuestWorkerSpec): Promise<GuestWorker> {
    const guest = new GuestWorker(spec)
    try {
      await guest.exchange(undefined, (message, settle) => {
        if (message.type === 'ready') settle(undefined)
        else if (message.type === 'failed-to-start') settle(toError(message.error))
      })
    } catch (error) {
      await guest.terminate()
      throw error
    }
    return guest
  }

  /** the thread's CPU time (µs); works while the guest is busy */
  private async cpuMicros (): Promise<number | undefined> {
    try {
      const usage = await this.worker.cpuUsage()
      return usage.user + usage.system
    } catch {
      return undefined
    }
  }

  async run (request: RunRequest, options: RunOptions, timing: GuestWorkerTiming): Promise<{ result: RunResult, recycle: boolean }> {
    const startedAt = performance.now()
    const job: RunJob = {
      code: request.code,
      module: request.module,
      stdin: request.stdin,
      files: request.files ?? {},
      env: request.env ?? {},
      args: request.args ?? [],
      limits: request.limits
    }
    let stdinWriter: LiveStdinWriter | undefined
    if (options.stdin !== undefined) {
      job.liveStdin = createLiveStdinBuffer()
      stdinWriter = new LiveStdinWriter(job.liveStdin)
      void stdinWriter.pump(options.stdin)
    }
    Atomics.store(this.control, CONTROL_STOP, STOP_NONE)

    const chunks: { stdout: Uint8Array[], stderr: Uint8Array[] } = { stdout: [], stderr: [] }
    let peakMemory = 0
    let cpuAtStart: number | undefined
    let killedFor: RunOutcome['reason'] | undefined
    const timers: NodeJS.Timeout[] = []
    const kill = (reason: NonNullable<RunOutcome['reason']>): void => {
      if (killedFor !== undefined || !this.usable) return
      killedFor = reason
      void this.cpuMicros().then(async (cpu) => {
        killedCpu = cpu
        await this.terminate()
      })
    }
    let killedCpu: number | undefined
    const onAbort = (): void => {
      Atomics.store(this.control, CONTROL_STOP, STOP_CANCEL)
      Atomics.notify(this.control, CONTROL_STOP)
      // a WASI guest has no interrupt points (only its stdin reads look), so it is stopped at once
      if (this.language === 'wasm') kill('cancelled')
      else timers.push(setTimeout(() => { kill('cancelled') }, timing.cancelGraceMs))
    }
    if (options.signal?.aborted === true) onAbort()
    else options.signal?.addEventListener('abort', onAbort, { once: true })
    const deadlineGrace = this.language === 'js'
      ? timing.timeoutGraceMs
      : this.language === 'python' ? Math.max(timing.timeoutGraceMs, PYTHON_TIMEOUT_GRACE_MS) : 0
    timers.push(setTimeout(() => { kill('timeout') }, request.limits.timeoutMs + deadlineGrace))

    try {
      const answer = await this.exchange<{ outcome: RunOutcome, recycle: boolean }>({ type: 'run', job }, (message, settle) => {
        switch (message.type) {
          case 'started':
            cpuAtStart = message.cpuMicros
            break
          case 'output':
            (message.stream === STREAM_STDERR ? chunks.stderr : chunks.stdout).push(message.data)
            options.onOutput?.({ stream: message.stream === STREAM_STDERR ? 'stderr' : 'stdout', data: message.data })
            break
          case 'done':
            settle({ outcome: message.outcome, recycle: message.recycle })
            break
          case 'failed':
            if (message.recycle) this.usable = false
            settle(toError(message.error))
            break
        }
      }, (exitError) => {
        // the worker died during the run: terminated by us, or out of its V8 heap, or crashed
        const cpu = killedCpu
        const outOfHeap = (exitError as { code?: string } | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY'
        const reason = killedFor ?? (outOfHeap ? 'memory' : undefined)
        const outcome: RunOutcome = {
          exitCode: null,
          ...(reason !== undefined ? { reason } : { error: { name: 'InternalError', message: `the sandbox worker died${exitError !== undefined ? `: ${exitError.message}` : ''}` } }),
          cpuMs: cpu !== undefined && cpuAtStart !== undefined ? (cpu - cpuAtStart) / 1000 : performance.now() - startedAt,
          memoryBytes: peakMemory,
          files: {}
        }
        return { outcome, recycle: true }
      })
      const { outcome, recycle } = answer
      peakMemory = outcome.memoryBytes
      if (recycle) this.usable = false
      const decoder = new TextDecoder()
      const result: RunResult = {
        exitCode: outcome.exitCode,
        stdout: decoder.decode(Buffer.concat(chunks.stdout)),
        stderr: decoder.decode(Buffer.concat(chunks.stderr)),
        ...(outcome.reason !== undefined ? { reason: outcome.reason } : {}),
        ...(outcome.error !== undefined ? { error: outcome.error } : {}),
        cpuMs: Math.round(outcome.cpuMs * 1000) / 1000,
        wallMs: Math.round((performance.now() - startedAt) * 1000) / 1000,
        memoryBytes: outcome.memoryBytes,
        files: outcome.files,
        ...(outcome.filesOmitted !== undefined ? { filesOmitted: outcome.filesOmitted } : {})
      }
      return { result, recycle: !this.usable }
    } finally {
      for (const timer of timers) clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      stdinWriter?.stop()
    }
  }

  async image (): Promise<WorkerImage> {
    return await this.exchange({ type: 'image' }, (message, settle) => {
      if (message.type === 'image') settle(message.image)
      else if (message.type === 'failed') settle(toError(message.error))
    })
  }

  async restore (image: WorkerImage): Promise<void> {
    // a copy moved to the worker: structured cloning 16 MiB took 28-160 ms here, a copy and transfer 9-37 ms
    const memory = image.memory?.slice() ?? null
    const request = { type: 'restore', image: { memory, files: image.files } }
    await this.exchange(request, (message, settle) => {
      if (message.type === 'restored') settle(undefined)
      else if (message.type === 'failed') {
        if (message.recycle) this.usable = false
        settle(toError(message.error))
      }
    })
  }

  async terminate (): Promise<void> {
    this.usable = false
    await this.worker.terminate()
    await this.exited
  }

  /**
   * Sends one request and feeds the answers to `handle` until it settles. When the worker exits
   * first, `onDeath` decides the answer (by default: an error).
   */
  private async exchange<T> (
    request: Parameters<Worker['postMessage']>[0] | undefined,
    handle: (message: FromWorker, settle: (value: T | Error) => void) => void,
    onDeath?: (error: Error | undefined) => T
  ): Promise<T> {
    if (this.busy) throw new BkgError('sandbox_busy', 409, 'the sandbox is busy with another request')
    if (!this.usable && request !== undefined) throw new BkgError('sandbox_gone', 410, 'the sandbox worker has ended')
    this.busy = true
    try {
      return await new Promise<T>((resolve, reject) => {
        const settle = (value: T | Error): void => {
          this.listener = undefined
          this.onExit = undefined
          if (value instanceof Error) reject(value)
          else resolve(value)
        }
        this.listener = (message) => { handle(message, settle) }
        this.onExit = (error) => {
          this.listener = undefined
          this.onExit = undefined
          if (onDeath !== undefined) resolve(onDeath(error))
          else reject(new Error(`the sandbox worker exited${error !== undefined ? `: ${error.message}` : ''}`))
        }
        if (request !== undefined) this.worker.postMessage(request, transferOf(request))
      })
    } finally {
      this.busy = false
    }
  }
}
