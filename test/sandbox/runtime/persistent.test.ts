import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { SandboxRuntime } from '../../../node/sandbox/runtime/index.ts'
import { fixture } from './wat.ts'
import { decode, limits, MiB, startRuntime, text } from './runtime-helpers.ts'

let runtime: SandboxRuntime

beforeAll(async () => { runtime = await startRuntime({ poolSize: { js: 1, wasm: 0 } }) })
afterAll(async () => { await runtime.stop() })

const js = (code: string): Parameters<SandboxRuntime['runOnce']>[1] => ({ code, limits })

describe('persistent JavaScript guests', () => {
  it('keep variables, functions and files between runs', async () => {
    const guest = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes })
    await guest.run(js('var counter = 1; function twice (n) { return n * 2 }; fs.writeFile("/notes.txt", "kept")'))
    const result = await guest.run(js('counter++; console.log(counter, twice(21), fs.readFile("/notes.txt", "utf8"))'))
    expect(result.stdout).toBe('2 42 kept\n')
    await guest.close()
  })

  it('restore brings back the state of an image, files included', async () => {
    const guest = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes })
    await guest.run(js('var n = 41; fs.writeFile("/a.txt", "first")'))
    const image = await guest.image()
    expect(image.language).toBe('js')
    expect(image.memory?.byteLength).toBe(16 * MiB)
    expect(Object.keys(image.files)).toEqual(['/a.txt'])
    await guest.run(js('n = 1000; var added = true; fs.writeFile("/a.txt", "second"); fs.writeFile("/b.txt", "new")'))
    await guest.restore(image)
    const result = await guest.run(js('console.log(n, typeof added, fs.readFile("/a.txt", "utf8"), fs.exists("/b.txt"))'))
    expect(result.stdout).toBe('41 undefined first false\n')
    await guest.close()
  })

  it('restores an image that grew the memory into a guest whose memory is smaller', async () => {
    const guest = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes })
    await guest.run(js('var big = "x".repeat(20 * 1024 * 1024); var tag = "grown"'))
    const image = await guest.image()
    expect(image.memory?.byteLength).toBeGreaterThan(20 * MiB)
    const fresh = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes, image })
    expect((await fresh.run(js('console.log(tag, big.length)'))).stdout).toBe(`grown ${20 * MiB}\n`)
    await Promise.all([guest.close(), fresh.close()])
  })

  it('forks: one image restored into 5 fresh guests, each going its own way', async () => {
    const origin = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes })
    await origin.run(js('var path = ["origin"]; fs.writeFile("/log", "origin")'))
    const image = await origin.image()
    const forks = await Promise.all(Array.from({ length: 5 }, async () => await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes, image })))
    const results = await Promise.all(forks.map(async (fork, i) => {
      await fork.run(js(`path.push("fork ${i}"); fs.appendFile("/log", " ${i}")`))
      return await fork.run(js('console.log(path.join(" > "), "|", fs.readFile("/log", "utf8"))'))
    }))
    expect(results.map(result => result.stdout)).toEqual([0, 1, 2, 3, 4].map(i => `origin > fork ${i} | origin ${i}\n`))
    expect((await origin.run(js('console.log(path.length)'))).stdout).toBe('1\n')
    await Promise.all([origin, ...forks].map(async guest => { await guest.close() }))
  })

  it('keeps its state after a timeout caught by the interrupt handler, and says when a terminate lost it', async () => {
    const guest = await runtime.openPersistent('js', { memoryBytes: limits.memoryBytes })
    await guest.run(js('var kept = "yes"'))
    const looped = await guest.run({ code: 'while (true) {}', limits: { ...limits, timeoutMs: 100 } })
    expect(looped).toMatchObject({ reason: 'timeout' })
    expect(looped.stateLost).toBeUndefined()
    expect((await guest.run(js('console.log(kept)'))).stdout).toBe('yes\n')
    const stuck = await guest.run({ code: "new Array(1e9) + ''", limits: { ...limits, timeoutMs: 100 } })
    expect(stuck).toMatchObject({ reason: 'timeout', stateLost: true })
    expect((await guest.run(js('console.log(typeof kept)'))).stdout).toBe('undefined\n')
    await guest.close()
  })

  it('refuses images of another language or larger than its cap', async () => {
    const guest = await runtime.openPersistent('js', { memoryBytes: 32 * MiB })
    await expect(guest.restore({ language: 'wasm', memory: null, files: {} })).rejects.toMatchObject({ code: 'invalid_image' })
    await expect(guest.restore({ language: 'js', memory: new Uint8Array(48 * MiB), files: {} })).rejects.toMatchObject({ code: 'invalid_image' })
    expect((await guest.run(js('console.log("fine")'))).stdout).toBe('fine\n')
    await guest.close()
    await expect(guest.run(js('1'))).rejects.toMatchObject({ code: 'sandbox_gone' })
  })

  it('counts runs, idle workers and replacements in its stats', async () => {
    const stats = runtime.stats()
    expect(stats.idle).toEqual({ js: 1, wasm: 0, python: 0 })
    expect(stats.running).toBe(0)
    expect(stats.replaced).toBeGreaterThanOrEqual(1)
    const pending = runtime.runOnce('js', { code: 'const until = Date.now() + 100; while (Date.now() < until) {}', limits })
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(runtime.stats().running).toBe(1)
    await pending
    expect(runtime.stats().running).toBe(0)
  })
})

describe('persistent WASI guests', () => {
  it('keep their filesystem between runs; an image is the files, restored as they were', async () => {
    const guest = await runtime.openPersistent('wasm', { memoryBytes: limits.memoryBytes })
    const files = await fixture('files')
    const first = await guest.run({ module: files, files: { '/in.txt': text('one') }, limits })
    expect(first.stdout).toBe('one')
    const image = await guest.image()
    expect(image).toMatchObject({ language: 'wasm', memory: null })
    expect(Object.keys(image.files).sort()).toEqual(['/in.txt', '/out.txt'])
    // a run without files in still sees what the last one left
    const second = await guest.run({ module: files, files: { '/in.txt': text('two') }, limits })
    expect(decode(second.files['/out.txt'])).toBe('two')
    await guest.restore(image)
    const after = await guest.image()
    expect(decode(after.files['/out.txt'])).toBe('one')
    const fork = await runtime.openPersistent('wasm', { memoryBytes: limits.memoryBytes, image })
    expect((await fork.run({ module: files, limits })).stdout).toBe('one')
    await Promise.all([guest.close(), fork.close()])
  })
})
