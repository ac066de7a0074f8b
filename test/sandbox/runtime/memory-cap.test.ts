import { describe, expect, it } from 'vitest'
import { capWasmMemory } from '../../../node/sandbox/runtime/index.ts'
import { Wasm } from '../../../node/sandbox/runtime/webassembly.ts'
import { assemble, disassemble } from './wat.ts'

const PAGE = 65536
const withMemory = (memory: string): string => `(module ${memory} (func (export "_start")) (data (i32.const 0) "x"))`

describe('capWasmMemory', () => {
  it('adds the cap as maximum to a memory declared without one, keeping every other section', async () => {
    const source = await assemble(withMemory('(memory (export "memory") 2)'))
    const { bytes, memory } = capWasmMemory(source, 16 * PAGE)
    expect(memory).toEqual({ imported: false, minPages: 2, maxPages: 16 })
    expect(Wasm.validate(bytes)).toBe(true)
    expect(await disassemble(bytes)).toContain('(memory (;0;) 2 16)')
    expect(await disassemble(bytes)).toContain('(data (;0;) (i32.const 0) "x")')
  })

  it('lowers a declared maximum above the cap and keeps one below it', async () => {
    expect(capWasmMemory(await assemble(withMemory('(memory 1 1000)')), 16 * PAGE).memory?.maxPages).toBe(16)
    expect(capWasmMemory(await assemble(withMemory('(memory 1 4)')), 16 * PAGE).memory?.maxPages).toBe(4)
  })

  it('caps an imported memory in the import section', async () => {
    const source = await assemble('(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))) (import "env" "memory" (memory 1)) (func (export "_start")))')
    const { bytes, memory } = capWasmMemory(source, 8 * PAGE)
    expect(memory).toEqual({ imported: true, minPages: 1, maxPages: 8 })
    expect(await disassemble(bytes)).toContain('(import "env" "memory" (memory (;0;) 1 8))')
    expect(await disassemble(bytes)).toContain('(import "wasi_snapshot_preview1" "proc_exit"')
  })

  it('the capped memory cannot grow past the cap', async () => {
    const source = await assemble('(module (memory (export "memory") 1) (func (export "grow") (result i32) (memory.grow (i32.const 100))))')
    const instance = new Wasm.Instance(new Wasm.Module(capWasmMemory(source, 4 * PAGE).bytes))
    expect((instance.exports.grow as () => number)()).toBe(-1)
  })

  it('leaves a module without memory as it is', async () => {
    const source = await assemble('(module (func (export "_start")))')
    expect(capWasmMemory(source, PAGE)).toEqual({ bytes: source, memory: null })
  })

  it('refuses a minimum above the cap, shared and 64-bit memories, and what is not WebAssembly', async () => {
    expect(() => capWasmMemory(new Uint8Array([1, 2, 3]), PAGE)).toThrow(/not a WebAssembly binary/)
    const big = await assemble(withMemory('(memory 2000)'))
    expect(() => capWasmMemory(big, 64 * PAGE)).toThrow(expect.objectContaining({ code: 'invalid_module', status: 422 }))
    const shared = await assemble(withMemory('(memory 1 2 shared)'), { threads: true })
    expect(() => capWasmMemory(shared, 64 * PAGE)).toThrow(/shared, 64-bit/)
    const wide = await assemble(withMemory('(memory i64 1)'), { memory64: true })
    expect(() => capWasmMemory(wide, 64 * PAGE)).toThrow(/shared, 64-bit/)
  })

  it('refuses a truncated module', async () => {
    const source = await assemble(withMemory('(memory 1)'))
    expect(() => capWasmMemory(source.subarray(0, source.length - 3), PAGE)).toThrow(expect.objectContaining({ code: 'invalid_module' }))
  })
})
