import { z } from 'zod'
import { NAMESPACE_PATTERN } from '../../ca/roles.ts'
import { PolicyInput, type ExecInput, type ExecResult, type SandboxApi } from '../sandbox/index.ts'
import { RunProgress } from './progress.ts'
import { Base64, Content, decodeContent, defineTool, encodeContent, type ToolDefinition } from './tool-kit.ts'

const LANGUAGES = ['js', 'python', 'wasm'] as const

const Namespace = z.string().regex(NAMESPACE_PATTERN, 'namespace: 1-63 of a-z 0-9 . _ -, starting with a letter or digit')
const SandboxId = z.string().min(1).max(128).describe('the sandbox id (from sandbox_create, sandbox_fork or sandbox_list)')
const SnapshotId = z.string().min(1).max(128).describe('a snapshot id (from sandbox_snapshot or the sandbox\'s snapshots)')
const TimeoutMs = z.number().int().min(1).max(24 * 3_600_000)

// the REST routes' own schema: the same fields, limits and messages
const Policy = PolicyInput.describe('limits (timeoutMs, memoryBytes, outputBytes, env): each absent field takes the node\'s default, and none may exceed the node\'s ceiling')

const Files = z.record(z.string().min(1).max(1024), Content)

const SnapshotOut = z.object({ id: z.string(), createdAt: z.string(), memoryBytes: z.number(), files: z.number(), storedBytes: z.number() })
const SandboxOut = z.object({
  id: z.string(),
  namespace: z.string(),
  language: z.enum(LANGUAGES),
  mode: z.enum(['quick', 'persistent']),
  policy: z.object({ timeoutMs: z.number(), memoryBytes: z.number(), outputBytes: z.number(), env: z.record(z.string(), z.string()) }),
  state: z.enum(['idle', 'running', 'stopped']),
  createdAt: z.string(),
  metrics: z.object({ cpuMs: z.number(), peakMemoryBytes: z.number(), executions: z.number(), snapshots: z.number() }),
  snapshots: z.array(SnapshotOut),
  origin: z.string().nullable()
})
const SandboxList = z.object({ sandboxes: z.array(SandboxOut) })

const RunInput = z.strictObject({
  code: z.string().max(1024 * 1024).describe('the program: JavaScript or Python source; for wasm, leave empty and give `module`'),
  language: z.enum(LANGUAGES).optional().meta({ default: 'js' }).describe('js (QuickJS), python (Pyodide) or wasm (a WASI preview1 module); default js. Ignored with sandboxId (the sandbox has its language)'),
  timeoutMs: TimeoutMs.optional().describe('wall-time limit of this run in ms (at most the sandbox policy\'s)'),
  sandboxId: SandboxId.optional().describe('run in this persistent sandbox (its state is kept between runs) instead of a fresh quick-mode one'),
  stdin: Content.optional().describe('what the program reads from stdin: text, or { base64 }'),
  files: Files.optional().describe('files written into the sandbox\'s in-memory filesystem before the run: absolute path → text or { base64 }'),
  module: Base64.optional().describe('the WASI module (language wasm), base64'),
  args: z.array(z.string().max(4096)).max(256).optional().describe('argv after the program name (wasm) or sys.argv[1:] (python)'),
  namespace: Namespace.optional().describe('quick mode: the namespace the run counts against (default: the token\'s)'),
  policy: Policy.optional().describe('quick mode: limits of this run')
})

const RunOutput = z.object({
  exitCode: z.number().nullable().describe('0 for a normal end, the code of exit(), 1 after an uncaught exception; null when the run was stopped'),
  stdout: z.string(),
  stderr: z.string(),
  reason: z.enum(['timeout', 'memory', 'output', 'cancelled']).optional().describe('why the run was ended from outside'),
  error: z.object({ name: z.string(), message: z.string(), stack: z.string().optional() }).optional().describe('the guest\'s uncaught exception'),
  cpuMs: z.number(),
  wallMs: z.number(),
  memoryBytes: z.number(),
  files: z.record(z.string(), Content).describe('files the run created or changed: path → text, or { base64 } for binary')
})

function runOutput (result: ExecResult): z.infer<typeof RunOutput> {
  const files: Record<string, Content> = {}
  for (const [path, bytes] of Object.entries(result.files)) files[path] = encodeContent(bytes)
  return {
    exitCode: result.exitCode,
    stdout: result.stdout,
    stderr: result.stderr,
    ...(result.reason != null ? { reason: result.reason } : {}),
    ...(result.error != null ? { error: result.error } : {}),
    cpuMs: result.cpuMs,
    wallMs: result.wallMs,
    memoryBytes: result.memoryBytes,
    files
  }
}

function execInput (args: z.infer<typeof RunInput>): ExecInput {
  const files: Record<string, Uint8Array> = {}
  for (const [path, content] of Object.entries(args.files ?? {})) files[path] = decodeContent(content)
  return {
    ...(args.code !== '' || args.module == null ? { code: args.code } : {}),
    ...(args.module != null ? { module: Buffer.from(args.module, 'base64') } : {}),
    ...(args.stdin != null ? { stdin: decodeContent(args.stdin) } : {}),
    ...(args.files != null ? { files } : {}),
    ...(args.args != null ? { args: args.args } : {}),
    ...(args.timeoutMs != null ? { timeoutMs: args.timeoutMs } : {})
  }
}

/** The sandbox tools: every call goes to the SandboxService with the caller's principal, which decides what the token may do. */
export function sandboxTools (sandboxes: SandboxApi): ToolDefinition[] {
  return [
    defineTool({
      name: 'sandbox_run',
      title: 'Run code in a sandbox',
      description: 'Runs code in a WebAssembly sandbox (no host filesystem, no network) and returns exitCode, stdout, stderr, reason (timeout | memory | output | cancelled) and the files the run wrote. ' +
        'Without sandboxId the run is in a fresh quick-mode sandbox from the warm pool; with sandboxId it runs in that persistent sandbox, whose variables and files stay for the next run. ' +
        'Sends progress notifications with the output as it comes (when the call has a progressToken); cancelling the call ends the run.',
      input: RunInput,
      output: RunOutput,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
      run: async (args, { caller, ctx }) => {
        const progress = new RunProgress(ctx, args.timeoutMs)
        const options = { signal: ctx.mcpReq.signal, ...(progress.enabled ? { onOutput: (chunk: { stream: 'stdout' | 'stderr', data: Uint8Array }) => { progress.output(chunk) } } : {}) }
        try {
          const input = execInput(args)
          const result = args.sandboxId != null
            ? await sandboxes.exec(caller.principal, args.sandboxId, input, options)
            : await sandboxes.run(caller.principal, {
              ...input,
              language: args.language ?? 'js',
              ...(args.namespace != null ? { namespace: args.namespace } : {}),
              ...(args.policy != null ? { policy: args.policy } : {})
            }, options)
          await progress.finish()
          return runOutput(result)
        } finally {
          progress.stop()
        }
      }
    }),
    defineTool({
      name: 'sandbox_create',
      title: 'Create a sandbox',
      description: 'Creates a sandbox. A persistent one (the default) keeps its state between sandbox_run calls and can be snapshotted, restored and forked; a quick one runs every execution in a fresh guest.',
      input: z.strictObject({
        language: z.enum(LANGUAGES).describe('js, python or wasm'),
        mode: z.enum(['quick', 'persistent']).optional().meta({ default: 'persistent' }).describe('default persistent'),
        namespace: Namespace.optional().describe('the namespace it belongs to (default: the token\'s; the node admin token may name any)'),
        policy: Policy.optional()
      }),
      output: SandboxOut,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
      run: async (args, { caller }) => ({
        ...await sandboxes.create(caller.principal, {
          language: args.language,
          mode: args.mode ?? 'persistent',
          ...(args.namespace != null ? { namespace: args.namespace } : {}),
          ...(args.policy != null ? { policy: args.policy } : {})
        })
      })
    }),
    defineTool({
      name: 'sandbox_list',
      title: 'List sandboxes',
      description: 'The sandboxes the token may see (its namespace\'s; all with the node admin token), with state, policy, metrics and snapshots.',
      input: z.strictObject({}),
      output: SandboxList,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
      run: async (_args, { caller }) => ({ sandboxes: sandboxes.list(caller.principal) })
    }),
    defineTool({
      name: 'sandbox_inspect',
      title: 'Inspect a sandbox',
      description: 'One sandbox: state, policy, metrics (CPU ms, peak memory, executions, snapshots) and its snapshots.',
      input: z.strictObject({ sandboxId: SandboxId }),
      output: SandboxOut,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
      run: async (args, { caller }) => ({ ...sandboxes.get(caller.principal, args.sandboxId) })
    }),
    defineTool({
      name: 'sandbox_snapshot',
      title: 'Snapshot a sandbox',
      description: 'Saves the persistent sandbox\'s state (memory image and files, content-addressed on disk) and returns the snapshot id to restore or fork from later.',
      input: z.strictObject({ sandboxId: SandboxId }),
      output: SnapshotOut,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
      run: async (args, { caller }) => ({ ...await sandboxes.snapshot(caller.principal, args.sandboxId) })
    }),
    defineTool({
      name: 'sandbox_restore',
      title: 'Restore a snapshot',
      description: 'Puts the persistent sandbox back to an earlier snapshot (backtracking); what it did since is lost unless snapshotted.',
      input: z.strictObject({ sandboxId: SandboxId, snapshotId: SnapshotId }),
      output: SandboxOut,
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
      run: async (args, { caller }) => ({ ...await sandboxes.restore(caller.principal, args.sandboxId, args.snapshotId) })
    }),
    defineTool({
      name: 'sandbox_fork',
      title: 'Fork a sandbox',
      description: 'Creates `count` new persistent sandboxes from a snapshot of this one (default: a snapshot taken now); each then diverges on its own.',
      input: z.strictObject({
        sandboxId: SandboxId,
        snapshotId: SnapshotId.optional(),
        count: z.number().int().min(1).max(100).optional().meta({ default: 1 }).describe('how many forks (default 1)')
      }),
      output: SandboxList,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
      run: async (args, { caller }) => ({
        sandboxes: await sandboxes.fork(caller.principal, args.sandboxId, {
          ...(args.snapshotId != null ? { snapshotId: args.snapshotId } : {}),
          ...(args.count != null ? { count: args.count } : {})
        })
      })
    }),
    defineTool({
      name: 'sandbox_stop',
      title: 'Stop a sandbox',
      description: 'Snapshots the sandbox\'s guest and frees it. The sandbox and its snapshots stay; the next run starts it again from that snapshot.',
      input: z.strictObject({ sandboxId: SandboxId }),
      output: SandboxOut,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
      run: async (args, { caller }) => ({ ...await sandboxes.stopSandbox(caller.principal, args.sandboxId) })
    }),
    defineTool({
      name: 'sandbox_delete',
      title: 'Delete a sandbox',
      description: 'Deletes the sandbox and its snapshots.',
      input: z.strictObject({ sandboxId: SandboxId }),
      output: z.object({ id: z.string(), deleted: z.boolean() }),
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
      run: async (args, { caller }) => {
        await sandboxes.remove(caller.principal, args.sandboxId)
        return { id: args.sandboxId, deleted: true }
      }
    })
  ]
}
