import fc from 'fast-check'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BkgError } from '../../lib/bkg-error.ts'
import type { Principal } from '../../node/auth/index.ts'
import { resolvePolicy, sandboxRuntime, sandboxService, type SandboxRuntime, type SandboxService } from '../../node/sandbox/index.ts'
import { tempDir } from '../helpers/mesh.ts'
import { assemble } from './runtime/wat.ts'

/**
 * Hostile input to the sandboxes: fast-check policies and module uploads (random bytes, and a
 * valid WASI module with bytes flipped, cut or spliced) through the real runtime. Each is run or
 * refused with a 4xx BkgError; none crashes a worker's host side, and the pool keeps serving.
 */

const log = pino({ level: 'silent' })
const admin: Principal = { kind: 'node-admin', role: 'admin', namespace: '*', tokenId: 'fuzz', expiresAt: null }
const RUNS = Number(process.env.BKG_FUZZ_RUNS ?? 1)

const HELLO_WAT = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 4)
  (data (i32.const 16) "hello\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))`

function expectRefusal (err: unknown): void {
  expect(err).toBeInstanceOf(BkgError)
  const status = (err as BkgError).status
  expect(status >= 400 && status < 500, `${(err as BkgError).code} (${status}): ${(err as Error).message}`).toBe(true)
}

describe('sandbox input fuzzing', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let runtime: SandboxRuntime
  let sandboxes: SandboxService
  let hello: Uint8Array

  beforeAll(async () => {
    tmp = await tempDir('bkg-sandbox-fuzz-')
    runtime = sandboxRuntime({ poolSize: { js: 1, wasm: 1 } })({ log })
    sandboxes = sandboxService({ dir: tmp.dir, quotas: { concurrentRuns: 64 } })({ runtime, log })
    await runtime.start()
    await sandboxes.start()
    hello = await assemble(HELLO_WAT)
  }, 60_000)

  afterAll(async () => {
    await sandboxes?.stop()
    await runtime?.stop()
    await tmp?.remove()
  })

  it('policies: any JSON value is a policy or a 400 invalid_policy', () => {
    const value = fc.oneof(
      fc.jsonValue(),
      fc.record({
        timeoutMs: fc.oneof(fc.integer(), fc.double(), fc.constant(Number.MAX_SAFE_INTEGER + 2), fc.string()),
        memoryBytes: fc.oneof(fc.integer({ min: -1, max: 2 ** 40 }), fc.double(), fc.constant(null)),
        outputBytes: fc.oneof(fc.nat(), fc.integer({ min: -5, max: 0 })),
        env: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.jsonValue())
      }, { requiredKeys: [] })
    )
    fc.assert(fc.property(value, (input) => {
      try {
        const policy = resolvePolicy(input)
        expect(policy.timeoutMs).toBeGreaterThan(0)
        expect(policy.memoryBytes).toBeGreaterThanOrEqual(20 * 1024 * 1024)
      } catch (err) {
        expectRefusal(err)
        expect((err as BkgError).code).toBe('invalid_policy')
      }
    }), { numRuns: 500 * RUNS, seed: 20261206 })
  })

  it('module uploads: random bytes and damaged modules are refused (4xx) or run; the pool keeps serving', async () => {
    const damaged = fc.oneof(
      fc.uint8Array({ maxLength: 512 }),
      // flipped bytes of a valid module
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }).map((flips) => {
        const bytes = hello.slice()
        for (const [at, xor] of flips) bytes[at % bytes.length] ^= xor
        return bytes
      }),
      // cut short, or with junk after it
      fc.nat().map((cut) => hello.slice(0, cut % hello.length)),
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((junk) => new Uint8Array([...hello, ...junk]))
    )
    await fc.assert(fc.asyncProperty(damaged, async (module) => {
      try {
        const result = await sandboxes.run(admin, { language: 'wasm', module, timeoutMs: 2000 })
        // what still validates runs like any module: to its end, or to a trap (exit 1 with an error)
        expect(result.exitCode === null ? result.reason : 'ended').toBeDefined()
      } catch (err) {
        expectRefusal(err)
      }
      // a module that fails on the worker's side costs a fresh worker (~0.1-0.3 s here): 60 cases per run
    }), { numRuns: 60 * RUNS, seed: 20261206 })
    const after = await sandboxes.run(admin, { language: 'wasm', module: hello })
    expect(after).toMatchObject({ exitCode: 0, stdout: 'hello\n' })
    expect((await sandboxes.run(admin, { language: 'js', code: 'console.log(1)' })).stdout).toBe('1\n')
  }, 120_000)

  it('code: arbitrary strings as JavaScript end with an exit code, never a host error', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(fc.string({ maxLength: 200 }), fc.constantFrom('}{', '\u0000', 'function(', '`${', '/*', 'import("fs")', 'await 1', 'throw null', 'throw undefined', 'Symbol()+""', 'new Proxy({}, { get () { throw 1 } }).x')), async (code) => {
      const result = await sandboxes.run(admin, { language: 'js', code, timeoutMs: 2000 })
      expect([0, 1]).toContain(result.exitCode)
    }), { numRuns: 150 * RUNS, seed: 20261206 })
  }, 120_000)
})
