import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Language, SandboxRuntime } from '../../../node/sandbox/runtime/index.ts'
import { decode, limits, recorder, startRuntime, text } from './runtime-helpers.ts'

let runtime: SandboxRuntime

beforeAll(async () => { runtime = await startRuntime({ poolSize: { js: 2, wasm: 0 } }) })
afterAll(async () => { await runtime.stop() })

const run = async (code: string, extra: Partial<Parameters<SandboxRuntime['runOnce']>[1]> = {}, options = {}): ReturnType<SandboxRuntime['runOnce']> =>
  await runtime.runOnce('js', { code, limits, ...extra }, options)

describe('quick JavaScript runs', () => {
  it('says hello, with metrics', async () => {
    const result = await run('console.log("hello", 1 + 1, { a: [1, "x"] })')
    expect(result).toMatchObject({ exitCode: 0, stdout: 'hello 2 { a: [ 1, "x" ] }\n', stderr: '', files: {} })
    expect(result.reason).toBeUndefined()
    expect(result.wallMs).toBeGreaterThan(0)
    expect(result.cpuMs).toBeGreaterThan(0)
    expect(result.memoryBytes).toBe(16 * 1024 * 1024)
  })

  it('streams stdout and stderr in the order they were written, as they happen', async () => {
    const { chunks, onOutput } = recorder()
    const result = await run('console.log("one"); console.error("two"); console.warn("three"); process.stdout.write("four")', {}, { onOutput })
    expect(chunks.map(chunk => [chunk.stream, chunk.text])).toEqual([['stdout', 'one\n'], ['stderr', 'two\n'], ['stderr', 'three\n'], ['stdout', 'four']])
    expect(result.stdout).toBe('one\nfour')
    expect(result.stderr).toBe('two\nthree\n')
  })

  it('reports an uncaught exception with exit code 1', async () => {
    const result = await run('function f () { throw new TypeError("boom") }\nf()')
    expect(result.exitCode).toBe(1)
    expect(result.error).toMatchObject({ name: 'TypeError', message: 'boom' })
    expect(result.error?.stack).toContain('main.js')
    expect(result.stderr).toContain('Uncaught TypeError: boom')
  })

  it('exits with the code of process.exit, and nothing runs after it', async () => {
    const result = await run('console.log("before"); process.exit(3); console.log("after")')
    expect(result).toMatchObject({ exitCode: 3, stdout: 'before\n' })
    expect(result.error).toBeUndefined()
    expect((await run('process.exitCode = 4')).exitCode).toBe(4)
  })

  it('runs promise jobs and timers to the end', async () => {
    const result = await run(`
      async function main () {
        await null
        console.log('a')
        await new Promise(resolve => setTimeout(resolve, 20))
        console.log('b')
      }
      main().then(() => console.log('c'))
      setTimeout(() => console.log('t0'), 0)
      console.log('sync')`)
    expect(result.stdout).toBe('sync\na\nt0\nb\nc\n')
    expect(result.wallMs).toBeGreaterThanOrEqual(20)
  })

  it('has env, argv, stdin and an in-memory filesystem; changed files come back', async () => {
    const result = await run(`
      console.log(process.env.GREETING, JSON.stringify(process.argv.slice(2)))
      console.log(readStdin().toUpperCase())
      console.log(fs.readFile('/data/in.txt', 'utf8'), fs.readdir('/data'))
      fs.writeFile('/out/result.txt', 'done')
      fs.writeFile('/data/in.txt', 'changed')
      fs.writeFile('/tmp.bin', new Uint8Array([1, 2, 3])); fs.unlink('/tmp.bin')`, {
      env: { GREETING: 'hi' },
      args: ['--x', 'y'],
      stdin: text('some input'),
      files: { '/data/in.txt': text('file content'), '/data/other': text('kept') }
    })
    expect(result.stdout).toBe('hi ["--x","y"]\nSOME INPUT\nfile content [ "in.txt", "other" ]\n')
    expect(Object.keys(result.files).sort()).toEqual(['/data/in.txt', '/out/result.txt'])
    expect(decode(result.files['/out/result.txt'])).toBe('done')
  })

  it('reads a live stdin as it arrives', async () => {
    async function * typing (): AsyncGenerator<Uint8Array> {
      yield text('first ')
      await new Promise(resolve => setTimeout(resolve, 30))
      yield text('second')
    }
    const { chunks, onOutput } = recorder()
    const result = await runtime.runOnce('js', {
      code: 'let c; while ((c = readStdinChunk()) !== null) console.log("got", new TextDecoder().decode(c))',
      limits
    }, { stdin: typing(), onOutput })
    expect(result.stdout).toBe('got first \ngot second\n')
    expect(chunks[1].at - chunks[0].at).toBeGreaterThan(20)
  })

  it('offers no way to the host', async () => {
    const result = await run(`
      console.log(typeof require, typeof process.binding, typeof globalThis.__bkgHost, typeof std, typeof os)
      try { fs.readFile('/etc/passwd') } catch (e) { console.log(e.code) }
      import('fs').then(() => console.log('imported'), (e) => console.log('import failed:', e.message))`)
    expect(result.stdout).toMatch(/^undefined undefined undefined undefined undefined\nENOENT\nimport failed: could not load module 'fs'/)
    const module = await run('import fs from "fs"')
    expect(module.exitCode).toBe(1)
    expect(module.error?.name).toBe('SyntaxError')
  })

  it('starts every run clean: nothing of the last run is left', async () => {
    await run('globalThis.leak = 42; fs.writeFile("/left.txt", "x"); var x = 1')
    for (let i = 0; i < 4; i++) {
      const result = await run('console.log(typeof leak, typeof x, fs.exists("/left.txt"))')
      expect(result.stdout).toBe('undefined undefined false\n')
    }
  })

  it('refuses what it cannot run', async () => {
    await expect(runtime.runOnce('ruby' as Language, { code: 'puts 1', limits })).rejects.toMatchObject({ code: 'invalid_input', status: 400 })
    await expect(runtime.runOnce('python', { code: 'print(1)', limits: { ...limits, memoryBytes: 32 * 1024 * 1024 } })).rejects.toMatchObject({ code: 'invalid_limits', status: 400 })
    await expect(runtime.runOnce('js', { limits })).rejects.toMatchObject({ code: 'invalid_input', status: 400 })
    await expect(run('1', { limits: { ...limits, memoryBytes: 1024 * 1024 } })).rejects.toMatchObject({ code: 'invalid_limits', status: 400 })
  })
})
