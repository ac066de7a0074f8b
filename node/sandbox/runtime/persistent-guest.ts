import { BkgError } from '../../../lib/bkg-error.ts'
import type { GuestWorker, GuestWorkerTiming } from './guest-worker.ts'
import type { Language, PersistentGuest, RunOptions, RunRequest, RunResult, SandboxImage } from './types.ts'

export interface PersistentGuestParts {
  language: Language
  memoryBytes: number
  timing: GuestWorkerTiming
  /** starts a fresh persistent worker of this language and cap */
  spawn: () => Promise<GuestWorker>
  /** a worker was lost to a breach or a crash */
  onReplaced: () => void
  onClose: () => void
}

/**
 * A guest that keeps its state between runs, in a worker of its own. JavaScript: the QuickJS heap
 * (variables, functions, the guest's files); WASI: the filesystem. The memory cap is fixed when the
 * guest opens (a run's `limits.memoryBytes` is replaced by it). When a run ends with its worker
 * terminated (a timeout behind the interrupt, a cancel, a crash) the state is gone: the guest goes
 * on in a fresh worker and the result says `stateLost`, so the caller can restore a snapshot.
 */
export class WorkerPersistentGuest implements PersistentGuest {
  private closed = false
  private worker: GuestWorker
  private readonly parts: PersistentGuestParts

  constructor (worker: GuestWorker, parts: PersistentGuestParts) {
    this.worker = worker
    this.parts = parts
  }

  async run (request: RunRequest, options: RunOptions = {}): Promise<RunResult> {
    this.ensureOpen()
    const limits = { ...request.limits, memoryBytes: this.parts.memoryBytes }
    const { result, recycle } = await this.worker.run({ ...request, limits }, options, this.parts.timing)
    if (recycle) {
      this.parts.onReplaced()
      void this.worker.terminate()
      this.worker = await this.parts.spawn()
      return { ...result, stateLost: true }
    }
    return result
  }

  async image (): Promise<SandboxImage> {
    this.ensureOpen()
    const image = await this.worker.image()
    return { language: this.parts.language, memory: image.memory, files: image.files }
  }

  async restore (image: SandboxImage): Promise<void> {
    this.ensureOpen()
    if (image.language !== this.parts.language) {
      throw new BkgError('invalid_image', 422, `a ${image.language} image cannot be restored into a ${this.parts.language} guest`)
    }
    await this.worker.restore({ memory: image.memory, files: image.files })
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.parts.onClose()
    await this.worker.terminate()
  }

  private ensureOpen (): void {
    if (this.closed) throw new BkgError('sandbox_gone', 410, 'the persistent guest is closed')
  }
}
