import type { GuestIO } from './guest-io.ts'
import type { WasmModule } from './webassembly.ts'
import type { PythonAssets, RunJob, RunOutcome, WorkerImage, WorkerMode } from './worker-protocol.ts'

/** what a runner knows of its worker */
export interface RunnerInit {
  mode: WorkerMode
  memoryBytes: number
  quickjsModule?: WasmModule
  /** python: the capped pyodide directory and the start snapshot's path */
  python?: PythonAssets
}

export interface RunnerOutcome extends RunOutcome {
  /** the worker must not serve again: its guest or the library under it may be in a broken state */
  recycle: boolean
}

/**
 * One language's guest inside a worker (one per worker). A language is one file that exports a
 * `createRunner: CreateRunner` (js-runner.ts, wasi-runner.ts, python-runner.ts) and one
 * line in worker-main.ts. Refusals of a request throw BkgError; guest faults are outcomes; any
 * other throw is a failure of the runtime, after which the worker is replaced.
 */
export interface GuestRunner {
  run: (job: RunJob, io: GuestIO) => RunnerOutcome | Promise<RunnerOutcome>
  /** quick mode, after a run: back to the state right after setup; false when it cannot be (replace the worker) */
  reset: () => boolean
  /** persistent mode, between runs */
  image: () => WorkerImage
  restore: (image: WorkerImage) => void | Promise<void>
}

export type CreateRunner = (init: RunnerInit) => Promise<GuestRunner>
