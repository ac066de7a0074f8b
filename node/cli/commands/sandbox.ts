import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import type { Command } from 'commander'
import { defaultDataDir } from '../../identity/index.ts'
import { CliError, EXIT } from '../errors.ts'
import { callNode, resolveTarget, streamNode, type NodeTarget } from '../node-client.ts'

const LANGUAGES = ['js', 'python', 'wasm'] as const
type Language = typeof LANGUAGES[number]
const LANGUAGE_BY_EXTENSION: Record<string, Language> = { '.js': 'js', '.mjs': 'js', '.py': 'python', '.wasm': 'wasm' }

/**
 * Exit statuses of `bkg sandbox run|exec`: the guest's own exit code, or when a limit ended the
 * run, the code `timeout(1)` uses for a timeout and neighbours of it (docs/operations.md).
 */
export const SANDBOX_EXIT = { timeout: 124, memory: 125, output: 126, cancelled: EXIT.interrupted } as const

interface TargetFlags { data: string, api?: string, token?: string }

interface SandboxView {
  id: string
  namespace: string
  language: Language
  mode: string
  state: string
  metrics: { cpuMs: number, peakMemoryBytes: number, executions: number, snapshots: number }
  snapshots: Array<{ id: string, createdAt: string }>
  origin: string | null
}

interface RunOutcome {
  exitCode: number | null
  reason?: keyof typeof SANDBOX_EXIT
  error?: { name: string, message: string }
  cpuMs: number
  wallMs: number
  memoryBytes: number
  files: Record<string, { encoding: string, data: string }>
}

function withTarget (command: Command): Command {
  return command
    .option('--data <dir>', 'data dir of the running node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of --data')
    .option('--token <token>', 'API token (a namespace token drives only its namespace\'s sandboxes)')
}

function languageOf (value: string): Language {
  if (!(LANGUAGES as readonly string[]).includes(value)) throw new CliError(`--lang must be one of ${LANGUAGES.join(', ')}, not "${value}"`, EXIT.usage)
  return value as Language
}

function positiveInt (flag: string, value: string | undefined): number | undefined {
  if (value == null) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new CliError(`${flag} must be a positive whole number, not "${value}"`, EXIT.usage)
  return n
}

/** The program of a run: a file (its extension names the language unless --lang does) or -e CODE; stdin when it is piped. */
async function programOf (file: string | undefined, options: { eval?: string, lang?: string }): Promise<{ language: Language, body: Record<string, unknown> }> {
  if ((file == null) === (options.eval == null)) throw new CliError('give a FILE or -e CODE (one of them)', EXIT.usage)
  let language = options.lang != null ? languageOf(options.lang) : undefined
  const body: Record<string, unknown> = {}
  if (file != null) {
    language ??= LANGUAGE_BY_EXTENSION[extname(file)]
    if (language == null) throw new CliError(`cannot tell the language of ${file} from its extension: pass --lang js|python|wasm`, EXIT.usage)
    let bytes: Buffer
    try {
      bytes = await readFile(file)
    } catch (err) {
      throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`)
    }
    if (language === 'wasm') body.module = bytes.toString('base64')
    else body.code = bytes.toString('utf8')
  } else {
    language ??= 'js'
    if (language === 'wasm') throw new CliError('a wasm module comes from a FILE, not -e', EXIT.usage)
    body.code = options.eval
  }
  if (!process.stdin.isTTY) {
    const chunks: Buffer[] = []
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
    if (chunks.length > 0) body.stdin = { encoding: 'base64', data: Buffer.concat(chunks).toString('base64') }
  }
  return { language, body }
}

/** Streams a run's output to this process's stdout and stderr; resolves with the exit status to leave with. */
async function streamRun (target: NodeTarget, path: string, body: unknown): Promise<number> {
  let outcome: RunOutcome | undefined
  let failure: { code: string, message: string } | undefined
  await streamNode(target, 'POST', path, body, (line) => {
    const message = line as { type: string, data?: string, error?: { code: string, message: string } } & RunOutcome
    if (message.type === 'stdout') process.stdout.write(message.data ?? '')
    else if (message.type === 'stderr') process.stderr.write(message.data ?? '')
    else if (message.type === 'exit') outcome = message
    else if (message.type === 'error') failure = message.error
  })
  if (failure != null) throw new CliError(`the run failed (${failure.code}): ${failure.message}`)
  if (outcome == null) throw new CliError('the node ended the stream without a result')
  if (outcome.error != null) process.stderr.write(`${outcome.error.name}: ${outcome.error.message}\n`)
  if (outcome.reason != null) {
    process.stderr.write(`bkg: the run was ended: ${outcome.reason} (${outcome.wallMs} ms, ${outcome.memoryBytes} bytes of memory)\n`)
    return SANDBOX_EXIT[outcome.reason]
  }
  return outcome.exitCode ?? EXIT.failed
}

export function registerSandboxCommands (program: Command): void {
  const sandbox = program.command('sandbox').description('run untrusted code in WebAssembly sandboxes on a running node')

  withTarget(sandbox.command('run')
    .description('run code once in a fresh sandbox (quick mode): output streams here, and bkg exits with the code\'s exit status (124 timeout, 125 memory, 126 output)')
    .argument('[file]', 'a .js, .py or .wasm (WASI) file')
    .option('-e, --eval <code>', 'code to run instead of a file')
    .option('--lang <language>', 'js | python | wasm (default: from the file extension, js for -e)')
    .option('--timeout <ms>', 'wall time limit of the run')
    .option('--memory <mib>', 'memory limit in MiB')
    .option('--namespace <ns>', 'namespace (with the admin token; a namespace token uses its own)'))
    .action(async (file: string | undefined, options: TargetFlags & { eval?: string, lang?: string, timeout?: string, memory?: string, namespace?: string }) => {
      const timeoutMs = positiveInt('--timeout', options.timeout)
      const memory = positiveInt('--memory', options.memory)
      const { language, body } = await programOf(file, options)
      const target = await resolveTarget(options, defaultDataDir())
      const policy = { ...(timeoutMs != null ? { timeoutMs } : {}), ...(memory != null ? { memoryBytes: memory * 1024 * 1024 } : {}) }
      const status = await streamRun(target, '/api/v1/sandboxes/run', { ...body, language, namespace: options.namespace, policy })
      process.exitCode = status
    })

  withTarget(sandbox.command('ls').description('the sandboxes this token may see'))
    .action(async (options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      const { sandboxes } = await callNode<{ sandboxes: SandboxView[] }>(target, 'GET', '/api/v1/sandboxes')
      for (const box of sandboxes) {
        console.log(`${box.id}  ${box.namespace}  ${box.language}  ${box.mode}  ${box.state}  ${box.metrics.executions} runs  ${box.snapshots.length} snapshots`)
      }
    })

  withTarget(sandbox.command('create')
    .description('create a sandbox; prints its id')
    .requiredOption('--lang <language>', 'js | python | wasm')
    .option('--mode <mode>', 'persistent (state kept, snapshots, forks) | quick', 'persistent')
    .option('--timeout <ms>', 'wall time limit per run')
    .option('--memory <mib>', 'memory limit in MiB')
    .option('--namespace <ns>', 'namespace (with the admin token)'))
    .action(async (options: TargetFlags & { lang: string, mode: string, timeout?: string, memory?: string, namespace?: string }) => {
      if (!['persistent', 'quick'].includes(options.mode)) throw new CliError(`--mode must be persistent or quick, not "${options.mode}"`, EXIT.usage)
      const timeoutMs = positiveInt('--timeout', options.timeout)
      const memory = positiveInt('--memory', options.memory)
      const target = await resolveTarget(options, defaultDataDir())
      const policy = { ...(timeoutMs != null ? { timeoutMs } : {}), ...(memory != null ? { memoryBytes: memory * 1024 * 1024 } : {}) }
      const box = await callNode<SandboxView>(target, 'POST', '/api/v1/sandboxes', { language: languageOf(options.lang), mode: options.mode, namespace: options.namespace, policy })
      console.log(box.id)
    })

  withTarget(sandbox.command('exec')
    .description('run code in a sandbox; output streams here, and bkg exits with the code\'s exit status')
    .argument('<id>', 'sandbox id')
    .argument('[file]', 'a .js, .py or .wasm file')
    .option('-e, --eval <code>', 'code to run instead of a file')
    .option('--timeout <ms>', 'wall time limit (at most the sandbox policy\'s)'))
    .action(async (id: string, file: string | undefined, options: TargetFlags & { eval?: string, timeout?: string }) => {
      const timeoutMs = positiveInt('--timeout', options.timeout)
      const target = await resolveTarget(options, defaultDataDir())
      const { language } = await callNode<SandboxView>(target, 'GET', `/api/v1/sandboxes/${encodeURIComponent(id)}`)
      const { body } = await programOf(file, { eval: options.eval, lang: language })
      process.exitCode = await streamRun(target, `/api/v1/sandboxes/${encodeURIComponent(id)}/exec`, { ...body, timeoutMs })
    })

  withTarget(sandbox.command('snapshot').description('snapshot a persistent sandbox; prints the snapshot id').argument('<id>', 'sandbox id'))
    .action(async (id: string, options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      const snapshot = await callNode<{ snapshotId: string, memoryBytes: number, storedBytes: number }>(target, 'POST', `/api/v1/sandboxes/${encodeURIComponent(id)}/snapshots`)
      console.error(`memory image ${snapshot.memoryBytes} bytes; ${snapshot.storedBytes} bytes of new pages stored`)
      console.log(snapshot.snapshotId)
    })

  withTarget(sandbox.command('restore').description('go back to an earlier snapshot').argument('<id>', 'sandbox id').argument('<snapshot>', 'snapshot id'))
    .action(async (id: string, snapshotId: string, options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      await callNode(target, 'POST', `/api/v1/sandboxes/${encodeURIComponent(id)}/restore`, { snapshotId })
      console.error(`${id} restored to ${snapshotId}`)
    })

  withTarget(sandbox.command('fork')
    .description('new sandboxes from a snapshot (default: one taken now); prints their ids')
    .argument('<id>', 'sandbox id')
    .option('--snapshot <snapshot>', 'snapshot to fork from')
    .option('--count <n>', 'how many (1-16)', '1'))
    .action(async (id: string, options: TargetFlags & { snapshot?: string, count: string }) => {
      const count = positiveInt('--count', options.count)
      const target = await resolveTarget(options, defaultDataDir())
      const { sandboxes } = await callNode<{ sandboxes: SandboxView[] }>(target, 'POST', `/api/v1/sandboxes/${encodeURIComponent(id)}/fork`, { snapshotId: options.snapshot, count })
      for (const box of sandboxes) console.log(box.id)
    })

  withTarget(sandbox.command('stop').description('snapshot a sandbox and free its guest (the next exec resumes)').argument('<id>', 'sandbox id'))
    .action(async (id: string, options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      await callNode(target, 'POST', `/api/v1/sandboxes/${encodeURIComponent(id)}/stop`)
      console.error(`${id} stopped`)
    })

  withTarget(sandbox.command('rm').description('delete a sandbox and its snapshots').argument('<id>', 'sandbox id'))
    .action(async (id: string, options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      await callNode(target, 'DELETE', `/api/v1/sandboxes/${encodeURIComponent(id)}`)
      console.error(`${id} deleted`)
    })
}
