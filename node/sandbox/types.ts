import type { Principal } from '../auth/index.ts'
import type { Language, OutputChunk, RunResult } from './runtime/types.ts'

export type { Language, OutputChunk }

export type SandboxMode = 'quick' | 'persistent'

/** A sandbox's limits (zod-validated in policy.ts; every field has a default and a node-wide ceiling). */
export interface SandboxPolicy {
  timeoutMs: number
  memoryBytes: number
  outputBytes: number
  /** environment variables the guest sees */
  env: Record<string, string>
}

export interface SnapshotInfo {
  id: string
  createdAt: string
  /** bytes of the guest's memory image (0 for wasm) */
  memoryBytes: number
  files: number
  /** bytes this snapshot added to the page store (equal pages are stored once) */
  storedBytes: number
}

export interface SandboxMetrics {
  cpuMs: number
  peakMemoryBytes: number
  executions: number
  snapshots: number
}

export interface SandboxInfo {
  id: string
  namespace: string
  language: Language
  /** quick: every exec in a fresh guest from the warm pool; persistent: one guest keeps its state */
  mode: SandboxMode
  policy: SandboxPolicy
  state: 'idle' | 'running' | 'stopped'
  createdAt: string
  metrics: SandboxMetrics
  snapshots: SnapshotInfo[]
  /** the snapshot it was restored or forked from, if any */
  origin: string | null
}

export interface ExecInput {
  code?: string
  /** a WASI module (language wasm) */
  module?: Uint8Array
  stdin?: Uint8Array
  files?: Record<string, Uint8Array>
  args?: string[]
  /** at most the policy's timeoutMs */
  timeoutMs?: number
}

export type ExecResult = RunResult

export interface ExecOptions {
  onOutput?: (chunk: OutputChunk) => void
  signal?: AbortSignal
  stdin?: AsyncIterable<Uint8Array>
}

/**
 * Sandboxes of a node, as routes, the MCP server and the CLI use them. Every call takes the
 * caller's principal: a namespace token sees and drives only its namespace's sandboxes (reader:
 * list and inspect; writer: everything else); the node's admin token sees all. Refusals are
 * BkgError: 404 sandbox_not_found | snapshot_not_found, 403 forbidden, 409 sandbox_busy |
 * not_persistent, 429 quota_exceeded, 400 invalid_policy | invalid_input.
 */
export interface SandboxService {
  /** quick mode: one run in a fresh guest from the warm pool */
  run: (principal: Principal, input: ExecInput & { namespace?: string, language: Language, policy?: Partial<SandboxPolicy> }, options?: ExecOptions) => Promise<ExecResult>
  create: (principal: Principal, input: { namespace?: string, language: Language, mode: SandboxMode, policy?: Partial<SandboxPolicy> }) => Promise<SandboxInfo>
  exec: (principal: Principal, id: string, input: ExecInput, options?: ExecOptions) => Promise<ExecResult>
  snapshot: (principal: Principal, id: string) => Promise<SnapshotInfo>
  restore: (principal: Principal, id: string, snapshotId: string) => Promise<SandboxInfo>
  /** `count` new sandboxes from a snapshot (default: a new snapshot of `id` taken now) */
  fork: (principal: Principal, id: string, input: { snapshotId?: string, count?: number }) => Promise<SandboxInfo[]>
  /**
   * snapshots the guest and frees it; the sandbox and its snapshots stay, and the next exec starts
   * it again from that snapshot (named so, not `stop`, because the service's own `stop` ends it all)
   */
  stopSandbox: (principal: Principal, id: string) => Promise<SandboxInfo>
  remove: (principal: Principal, id: string) => Promise<void>
  list: (principal: Principal) => SandboxInfo[]
  get: (principal: Principal, id: string) => SandboxInfo
}
