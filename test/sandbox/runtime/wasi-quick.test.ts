import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { SandboxRuntime } from '../../../node/sandbox/runtime/index.ts'
import { fixture } from './wat.ts'
import { decode, limits, recorder, startRuntime, text } from './runtime-helpers.ts'

let runtime: SandboxRuntime

beforeAll(async () => { runtime = await startRuntime({ poolSize: { js: 0, wasm: 1 } }) })
afterAll(async () => { await runtime.stop() })

const run = async (name: string, extra: Partial<Parameters<SandboxRuntime['runOnce']>[1]> = {}, options = {}): ReturnType<SandboxRuntime['runOnce']> =>
  await runtime.runOnce('wasm', { module: await fixture(name), limits, ...extra }, options)

describe('quick WASI runs', () => {
  it('says hello, streamed, with metrics', async () => {
    const { chunks, onOutput } = recorder()
    const result = await run('hello', {}, { onOutput })
    expect(result).toMatchObject({ exitCode: 0, stdout: 'hello\n', stderr: '', memoryBytes: 65536, files: {} })
    expect(chunks.map(chunk => chunk.text)).toEqual(['hello\n'])
    expect(result.cpuMs).toBeGreaterThan(0)
  })

  it('reads stdin to its end, static or live', async () => {
    expect(await run('cat', { stdin: text('line1\nline2\n') })).toMatchObject({ exitCode: 0, stdout: 'line1\nline2\n', stderr: '<eof>\n' })
    expect(await run('cat')).toMatchObject({ exitCode: 0, stdout: '', stderr: '<eof>\n' })
    async function * live (): AsyncGenerator<Uint8Array> {
      yield text('a')
      await new Promise(resolve => setTimeout(resolve, 20))
      yield text('b')
    }
    const { chunks, onOutput } = recorder()
    const result = await run('cat', {}, { stdin: live(), onOutput })
    expect(result.stdout).toBe('ab')
    expect(chunks.map(chunk => chunk.text)).toEqual(['a', 'b', '<eof>\n'])
  })

  it('reports the exit code of proc_exit, and a trap as exit code 1 with an error', async () => {
    expect((await run('exit3')).exitCode).toBe(3)
    const trapped = await run('trap')
    expect(trapped).toMatchObject({ exitCode: 1, error: { name: 'RuntimeError' } })
    expect(trapped.error?.message).toMatch(/unreachable/)
    expect((await run('hello')).stdout).toBe('hello\n')
  })

  it('gives files in and returns the files it wrote', async () => {
    const result = await run('files', { files: { '/in.txt': text('from the host') } })
    expect(result).toMatchObject({ exitCode: 0, stdout: 'from the host' })
    expect(Object.keys(result.files)).toEqual(['/out.txt'])
    expect(decode(result.files['/out.txt'])).toBe('from the host')
  })

  it('cannot reach host files', async () => {
    const result = await run('passwd')
    // 44 = ENOENT in WASI: there is no /etc/passwd in the in-memory filesystem
    expect(result.exitCode).toBe(44)
    expect((await run('files')).exitCode).toBe(100 + 44)
  })

  it('refuses modules that import from outside WASI or are not WebAssembly', async () => {
    await expect(run('host-import')).rejects.toMatchObject({ code: 'invalid_module', status: 422, message: expect.stringContaining('env.foo') })
    await expect(runtime.runOnce('wasm', { module: text('not wasm'), limits })).rejects.toMatchObject({ code: 'invalid_module' })
    await expect(runtime.runOnce('wasm', { limits })).rejects.toMatchObject({ code: 'invalid_input', status: 400 })
    expect((await run('hello')).stdout).toBe('hello\n')
  })
})
