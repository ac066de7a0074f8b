import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

export const CLI_ENTRY = fileURLToPath(new URL('../cli/main.ts', import.meta.url))

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
  const child = spawn(process.execPath, [CLI_ENTRY, 'start', ...options.args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const stderrTail: string[] = []
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail.push(line)
    if (stderrTail.length > 20) stderrTail.shift()
    options.onLog?.(line)
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
    void exited.then((code) => {
      clearTimeout(timer)
      if (!seen) reject(new Error(`node exited with code ${code} before starting:\n${stderrTail.join('\n')}`))
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
