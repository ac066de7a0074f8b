/*
 * The messages between the main thread (guest-worker.ts) and a sandbox worker (worker-main.ts).
 * A worker does one thing at a time: a run, an image or a restore, each answered once.
 */
import type { BreachReason, Language, RunLimits } from './types.ts'
import type { WasmModule } from './webassembly.ts'

export type WorkerMode = 'quick' | 'persistent'

/** what a Python worker loads: a pyodide directory whose wasm memory is capped, and the start snapshot (made if missing) */
export interface PythonAssets {
  indexURL: string
  snapshotPath: string
}

/** `workerData` of a sandbox worker */
export interface WorkerInit {
  language: Language
  mode: WorkerMode
  /** the hard cap of the guest's linear memory (JS: the Memory maximum, fixed for the worker's life) */
  memoryBytes: number
  /** QuickJS compiled once on the main thread (structured-clonable), so a worker need not compile it */
  quickjsModule?: WasmModule
  /** python: where pyodide loads from */
  python?: PythonAssets
  /** Int32Array over it: the stop request the guest polls (see STOP_* below) */
  control: SharedArrayBuffer
}

/** index of the stop request in the control array: 0 = run on, STOP_CANCEL = stop now */
export const CONTROL_STOP = 0
export const STOP_NONE = 0
export const STOP_CANCEL = 1

/** a run as the worker receives it (the request without its language) */
export interface RunJob {
  code?: string
  module?: Uint8Array
  /** static stdin (all of it, then EOF); ignored when liveStdin is given */
  stdin?: Uint8Array
  /** the channel of a live stdin (live-stdin.ts) */
  liveStdin?: SharedArrayBuffer
  files: Record<string, Uint8Array>
  env: Record<string, string>
  args: string[]
  limits: RunLimits
}

/** what a run came to, as the worker saw it (stdout and stderr went out as output messages) */
export interface RunOutcome {
  exitCode: number | null
  reason?: BreachReason | 'cancelled'
  error?: { name: string, message: string, stack?: string }
  cpuMs: number
  memoryBytes: number
  files: Record<string, Uint8Array>
  filesOmitted?: string[]
}

export interface WorkerImage {
  memory: Uint8Array | null
  files: Record<string, Uint8Array>
}

/** a refusal or failure that crossed the thread boundary (a BkgError when code and status are set) */
export interface WorkerError {
  name: string
  message: string
  code?: string
  status?: number
}

export type ToWorker =
  | { type: 'run', job: RunJob }
  | { type: 'image' }
  | { type: 'restore', image: WorkerImage }

export const STREAM_STDOUT = 1
export const STREAM_STDERR = 2

export type FromWorker =
  | { type: 'ready' }
  | { type: 'failed-to-start', error: WorkerError }
  /** sent when a run begins: the thread's CPU time then, to measure a run whose worker gets terminated */
  | { type: 'started', cpuMicros: number }
  | { type: 'output', stream: typeof STREAM_STDOUT | typeof STREAM_STDERR, data: Uint8Array }
  /** `recycle`: the worker must not serve again (dirty beyond a reset, or wasmer-js possibly poisoned) */
  | { type: 'done', outcome: RunOutcome, recycle: boolean }
  | { type: 'image', image: WorkerImage }
  | { type: 'restored' }
  | { type: 'failed', error: WorkerError, recycle: boolean }
