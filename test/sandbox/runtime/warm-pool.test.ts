import { describe, expect, it } from 'vitest'
import type { GuestWorker } from '../../../node/sandbox/runtime/guest-worker.ts'
import { WarmPool } from '../../../node/sandbox/runtime/warm-pool.ts'
import type { WarmPoolInit } from '../../../node/sandbox/runtime/warm-pool.ts'

const MiB = 1024 * 1024

/** a pool whose workers are stand-ins: what it starts is counted, nothing runs */
function fakePool (sizes: WarmPoolInit['sizes'], defaultMemoryBytes = 64 * MiB, warmBeforeUse = true): { pool: WarmPool, started: string[] } {
  const started: string[] = []
  const pool = new WarmPool({
    sizes,
    defaultMemoryBytes,
    minPythonMemoryBytes: 40 * MiB,
    maxIdleOtherCaps: 4,
    warmBeforeUse,
    spawn: async (language, memoryBytes) => {
      started.push(`${language}:${memoryBytes / MiB}`)
      return { language, memoryBytes, usable: true, terminate: async () => {} } as unknown as GuestWorker
    },
    onSpawnError: () => {}
  })
  return { pool, started }
}

describe('the warm pool and Python', () => {
  it('keeps no Python worker warm until Python is used, then one', async () => {
    const { pool, started } = fakePool({ js: 1, wasm: 0, python: 0 })
    pool.refill()
    await pool.settled()
    expect(started).toEqual(['js:64'])
    // the first Python run starts its own worker (cold) and one to keep warm
    expect(pool.take('python', 64 * MiB)).toBeUndefined()
    await pool.settled()
    expect(started).toEqual(['js:64', 'python:64'])
    expect(pool.idleCount('python')).toBe(1)
    // taking the warm one does not start the next: a starting pyodide would take the run's CPU;
    // the run's end refills (runOnce)
    expect(pool.take('python', 64 * MiB)).toBeDefined()
    expect(started).toHaveLength(2)
    pool.refill()
    await pool.settled()
    expect(started).toEqual(['js:64', 'python:64', 'python:64'])
    pool.refill()
    await pool.settled()
    expect(started).toHaveLength(3)
    await pool.stop()
  })

  it('keeps poolSize.python warm from the start, and none when the default cap is below Python\'s minimum', async () => {
    const sized = fakePool({ js: 0, wasm: 0, python: 2 })
    sized.pool.refill()
    await sized.pool.settled()
    expect(sized.started).toEqual(['python:64', 'python:64'])
    await sized.pool.stop()
    const small = fakePool({ js: 0, wasm: 0, python: 2 }, 32 * MiB)
    small.pool.refill()
    await small.pool.settled()
    expect(small.started).toEqual([])
    await small.pool.stop()
  })

  it('with warmBeforeUse false, a language is kept warm only once it has been used', async () => {
    const { pool, started } = fakePool({ js: 1, wasm: 1, python: 0 }, 64 * MiB, false)
    pool.refill()
    await pool.settled()
    expect(started).toEqual([])
    expect(pool.take('wasm', 64 * MiB)).toBeUndefined()
    await pool.settled()
    expect(started).toEqual(['wasm:64'])
    expect(pool.take('js', 64 * MiB)).toBeUndefined()
    await pool.settled()
    expect(started).toEqual(['wasm:64', 'js:64'])
    expect(pool.idleCount('js')).toBe(1)
  })
})
