/**
 * Sandboxes: untrusted code run in WebAssembly guests (JavaScript in QuickJS, WASI modules,
 * Python), each in a worker thread with hard limits. Quick sandboxes run every exec in a fresh
 * guest from a warm pool; persistent ones keep their state and can be snapshotted
 * (content-addressed on disk), restored and forked. A namespace token drives only its
 * namespace's sandboxes.
 *
 * @example
 * import { sandboxRuntime, sandboxService } from '../sandbox/index.ts'
 *
 * const runtime = sandboxRuntime({})({ log })
 * const sandboxes = sandboxService({ dir: join(dataDir, 'sandboxes') })({ runtime, log })
 * await runtime.start(); await sandboxes.start()
 *
 * const box = await sandboxes.create(principal, { language: 'js', mode: 'persistent' })
 * await sandboxes.exec(principal, box.id, { code: 'let n = 41' })
 * const snapshot = await sandboxes.snapshot(principal, box.id)
 * const [a, b] = await sandboxes.fork(principal, box.id, { snapshotId: snapshot.id, count: 2 })
 * (await sandboxes.exec(principal, a.id, { code: 'console.log(++n)' })).stdout   // '42\n'
 */
export { checkGuestPath } from './input.ts'
export { sandboxRuntime, type SandboxRuntimeComponents, type SandboxRuntimeInit } from './runtime/index.ts'
export { PolicyInput, resolvePolicy } from './policy.ts'
export { sandboxService, SandboxService, type SandboxQuotas, type SandboxServiceComponents, type SandboxServiceInit } from './sandbox-service.ts'
export type {
  ExecInput, ExecOptions, ExecResult, Language, OutputChunk, SandboxInfo, SandboxMode, SandboxPolicy, SandboxService as SandboxApi, SnapshotInfo
} from './types.ts'
export type { PersistentGuest, RunRequest, RunResult, SandboxImage, SandboxRuntime } from './runtime/types.ts'
