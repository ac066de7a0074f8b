import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { BkgError } from '../../lib/bkg-error.ts'

export const CLI_ENTRY = fileURLToPath(new URL('../cli/main.js', import.meta.url))

/**
 * V8 flags for node processes. A 4 MiB young generation (V8's default grows to 16 MiB per
 * semi-space) keeps an idle node ~25 MiB smaller (145 vs 167 MiB alone, 151-156 MiB in a 10-node mesh); 1-2 MiB saves ~10 MiB more but triples gossip latency under load (more scavenges); measured in bench/idle-rss.ts.
 */
export const NODE_RUNTIME_FLAGS = ['--max-semi-space-size=4']

/**
 * Environment for node processes (`bin/bkg` sets the same; a GLIBC_TUNABLES of the caller wins).
 * glibc hands memory back to the kernel once 128 KiB lie free at the top of its heap and serves
 * every allocation of 128 KiB or more from a fresh mapping; on these VMs each page that comes back
 * costs a fault (touching 512 MiB of fresh memory took 1.7 s). Transfers allocate and free
 * megabytes per block, so glibc keeps up to 64 MiB free and serves up to 4 MiB from its heap: the
 * same memory is reused (repeated 256 MiB pulls: 1.6-1.9 s instead of 2.1-2.3 s). It costs an idle
 * node about a MiB (10-node mesh, median of 10: 143-144 MiB with, 142-143 MiB without).
 */
export const NODE_RUNTIME_ENV: Record<string, string> = {
  GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=67108864:glibc.malloc.mmap_threshold=4194304'
}

/**
 * How a node process is started: the runtime flags and environment above, plus BKG_NODE_FLAGS,
 * extra flags for investigations (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"). The bench starts
 * its baseline processes the same way.
 */
export function nodeRuntime (env: NodeJS.ProcessEnv = {}): { args: string[], env: NodeJS.ProcessEnv } {
  const extra = process.env.BKG_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? []
  return { args: [...NODE_RUNTIME_FLAGS, ...extra], env: { ...NODE_RUNTIME_ENV, ...process.env, ...env } }
}

/** `bkg start` exited before its started line; `exitCode` is that process's (see EXIT in cli/errors.ts). */
export class NodeStartError extends BkgError {
  readonly exitCode: number | null
  constructor (message: string, exitCode: number | null) {
    super('node_start_failed', 500, message)
    this.exitCode = exitCode
  }
}

export interface StartedLine {
  event: 'started'
  peerId: string
  api: string
  addrs: string[]
}

export interface NodeProcess {
  child: ChildProcess
  started: StartedLine
  /** resolves with the exit code once the process has exited */
  exited: Promise<number | null>
  stop: (signal?: NodeJS.Signals) => Promise<number | null>
}

export interface SpawnNodeOptions {
  args: string[]
  env?: NodeJS.ProcessEnv
  /** receives every log line the node writes (stderr and stdout after the started line) */
  onLog?: (line: string) => void
  startTimeoutMs?: number
}

/**
 * Runs `bkg start …` as its own OS process on the same Node binary and waits for its
 * machine-readable `started` line.
 */
export async function spawnNode (options: SpawnNodeOptions): Promise<NodeProcess> {
  const runtime = nodeRuntime(options.env)
  const child = spawn(process.execPath, [...runtime.args, CLI_ENTRY, 'start', ...options.args], {
    env: runtime.env,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const stderrTail: string[] = []
  // the CLI's own one-line report of why it stopped: it becomes the error, not a log line as well
  let failure: string | undefined
  const stderrLines = createInterface({ input: child.stderr! })
  const stderrClosed = new Promise<void>((resolve) => stderrLines.once('close', resolve))
  stderrLines.on('line', (line) => {
    stderrTail.push(line)
    if (stderrTail.length > 20) stderrTail.shift()
    if (line.startsWith('bkg: ')) failure = line.slice(5)
    else options.onLog?.(line)
  })
  const started = await new Promise<StartedLine>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node did not start within ${options.startTimeoutMs ?? 30_000} ms:\n${stderrTail.join('\n')}`)), options.startTimeoutMs ?? 30_000)
    const lines = createInterface({ input: child.stdout! })
    let seen = false
    lines.on('line', (line) => {
      if (!seen && line.startsWith('{"event":"started"')) {
        seen = true
        clearTimeout(timer)
        resolve(JSON.parse(line) as StartedLine)
        return
      }
      options.onLog?.(line)
    })
    void exited.then(async (code) => {
      clearTimeout(timer)
      if (seen) return
      // stderr may still be draining when the exit event comes
      await Promise.race([stderrClosed, new Promise((resolve) => setTimeout(resolve, 1000))])
      reject(failure != null
        ? new NodeStartError(failure, code)
        : new NodeStartError(`node exited with code ${code} before starting:\n${stderrTail.join('\n')}`, code))
    })
  })
  return {
    child,
    started,
    exited,
    async stop (signal = 'SIGTERM') {
      if (child.exitCode == null && child.signalCode == null) child.kill(signal)
      return await exited
    }
  }
}
