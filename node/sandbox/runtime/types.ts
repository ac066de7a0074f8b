/**
 * The contract between the sandbox service (sandboxes, namespaces, quotas, snapshots on disk) and
 * the runtime (worker threads that run guest code in WebAssembly). The runtime knows nothing of
 * namespaces, tokens or disks; the service knows nothing of QuickJS, WASI or Pyodide.
 */

export type Language = 'js' | 'python' | 'wasm'

/** Limits of one run; the service resolves them from the sandbox's policy. */
export interface RunLimits {
  /** wall time of the run; the guest is interrupted, and its worker terminated behind that */
  timeoutMs: number
  /** hard cap of the guest's linear memory (a WebAssembly.Memory maximum) */
  memoryBytes: number
  /** stdout + stderr + files returned, together */
  outputBytes: number
}

export interface RunRequest {
  /** JavaScript or Python source (language js | python) */
  code?: string
  /** a WASI preview1 module (language wasm) */
  module?: Uint8Array
  /** what the guest reads from stdin (all of it, then EOF), unless a live stdin is given */
  stdin?: Uint8Array
  /** written into the sandbox's in-memory filesystem before the run (paths absolute, `/` separated) */
  files?: Record<string, Uint8Array>
  env?: Record<string, string>
  /** argv after the program name (wasm) or `sys.argv[1:]` (python) */
  args?: string[]
  limits: RunLimits
}

export type BreachReason = 'timeout' | 'memory' | 'output'

export interface RunResult {
  /** the guest's exit status: 0 for a normal end, the code of `exit`, 1 after an uncaught exception; null when it was stopped */
  exitCode: number | null
  stdout: string
  stderr: string
  /** why the run was ended from outside; absent when the guest ended on its own */
  reason?: BreachReason | 'cancelled'
  /** an uncaught exception of the guest */
  error?: { name: string, message: string, stack?: string }
  /** CPU time of the worker thread during the run */
  cpuMs: number
  wallMs: number
  /** the guest's linear memory at its largest during the run */
  memoryBytes: number
  /** files created or changed by this run (within the output limit) */
  files: Record<string, Uint8Array>
  /** created or changed files left out of `files` because they did not fit in the output limit */
  filesOmitted?: string[]
  /**
   * persistent mode: the guest's worker had to be ended (terminated after a breach, or crashed),
   * so the guest goes on from a clean state; restore a snapshot to continue from one
   */
  stateLost?: boolean
}

export interface OutputChunk {
  stream: 'stdout' | 'stderr'
  data: Uint8Array
}

export interface RunOptions {
  /** output as the guest writes it */
  onOutput?: (chunk: OutputChunk) => void
  /** aborting ends the run with reason 'cancelled' */
  signal?: AbortSignal
  /** a live stdin (the WebSocket stream); the guest blocks on a read until data or EOF arrives */
  stdin?: AsyncIterable<Uint8Array>
}

/**
 * What a persistent sandbox is at a point in time: the guest's linear memory (JavaScript: the
 * QuickJS heap with every variable and the guest's in-memory files; null for wasm, whose state
 * between runs is its filesystem) and its filesystem tree.
 */
export interface SandboxImage {
  language: Language
  memory: Uint8Array | null
  files: Record<string, Uint8Array>
}

/** One long-lived guest (persistent mode): state kept between runs. */
export interface PersistentGuest {
  run: (request: RunRequest, options?: RunOptions) => Promise<RunResult>
  /** the guest's state now (between runs only) */
  image: () => Promise<SandboxImage>
  /** replaces the guest's state with an image taken earlier from a guest of the same language and memory cap */
  restore: (image: SandboxImage) => Promise<void>
  /** ends the guest and frees its worker */
  close: () => Promise<void>
}

export interface RuntimeStats {
  /** warm workers waiting, per language */
  idle: Record<Language, number>
  /** runs in progress */
  running: number
  /** workers replaced after a breach or crash */
  replaced: number
}

export interface SandboxRuntime {
  /** a run in a fresh guest from the warm pool; the worker goes back clean or is replaced */
  runOnce: (language: Language, request: RunRequest, options?: RunOptions) => Promise<RunResult>
  /** a guest of its own (a worker of its own), optionally starting from an image */
  openPersistent: (language: Language, init: { memoryBytes: number, image?: SandboxImage }) => Promise<PersistentGuest>
  stats: () => RuntimeStats
  start: () => Promise<void>
  stop: () => Promise<void>
}
