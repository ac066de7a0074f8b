import { spawn, spawnSync } from 'node:child_process'
import { access } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'vitest'
import { CLI_ENTRY } from '../../node/devnet/index.ts'

export interface CliRun { code: number | null, stdout: string, stderr: string }

/** `bkg` in `dir`, with HOME and the default data dir inside it, so nothing touches ~/.bkg. */
export function cliEnv (dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: dir, BKG_DATA: join(dir, 'default-data') }
  delete env.BKG_TOKEN
  delete env.BKG_DEBUG
  // an operator's exported CA passphrase must not change what the tests see
  delete env.BKG_CA_PASSPHRASE
  delete env.BKG_CA_NEW_PASSPHRASE
  return env
}

/** Runs `bkg ARGS…` on this Node binary and collects its output; `env` adds variables (a CA passphrase). */
export async function runBkg (args: string[], dir: string, env: Record<string, string> = {}): Promise<CliRun> {
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], { cwd: dir, env: { ...cliEnv(dir), ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  // a hang guard, not a speed assertion
  const guard = setTimeout(() => child.kill('SIGKILL'), 45_000)
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)))
  clearTimeout(guard)
  return { code, stdout, stderr }
}

/** The same, blocking: for set-up steps (packing a model, publishing it). */
/** Runs `bkg` (synchronously) and throws with its last stderr line unless it exits 0. */
export function runBkgOk (args: string[], dir: string): CliRun {
  const run = runBkgSync(args, dir)
  if (run.code !== 0) throw new Error(`bkg ${args.slice(0, 2).join(' ')} failed: ${run.stderr.trim().split('\n').pop()}`)
  return run
}

export function runBkgSync (args: string[], dir: string): CliRun {
  const child = spawnSync(process.execPath, [CLI_ENTRY, ...args], { cwd: dir, env: cliEnv(dir), encoding: 'utf8', timeout: 120_000 })
  return { code: child.status, stdout: child.stdout, stderr: child.stderr }
}

/**
 * A clean failure: non-zero exit (or exactly `exitCode`), a `bkg: …` message matching `message`,
 * no stack trace; with `singleLine`, stderr is that one line and stdout is empty.
 */
export function expectCleanFailure (run: CliRun, message: RegExp, options: { exitCode?: number, singleLine?: boolean } = {}): void {
  const detail = `exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`
  expect(run.code, detail).not.toBeNull()
  if (options.exitCode != null) expect(run.code, detail).toBe(options.exitCode)
  else expect(run.code, detail).not.toBe(0)
  if (options.singleLine === true) {
    const lines = run.stderr.trim().split('\n')
    expect(lines, detail).toHaveLength(1)
    expect(lines[0], detail).toMatch(/^bkg: /)
    expect(run.stdout, detail).toBe('')
  } else {
    expect(run.stderr, detail).toMatch(/^bkg: /m)
  }
  expect(run.stderr, detail).toMatch(message)
  expect(run.stderr, detail).not.toMatch(/^\s+at /m)
  expect(run.stderr, detail).not.toMatch(/unexpected error/)
}

export async function pathExists (path: string): Promise<boolean> {
  return await access(path).then(() => true, () => false)
}
