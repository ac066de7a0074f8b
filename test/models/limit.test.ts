import { describe, expect, it } from 'vitest'
import { Limit } from '../../lib/limit.ts'

const tick = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

describe('Limit', () => {
  it('never admits more than its maximum, and every waiter gets in (many takers, random hold times)', async () => {
    const limit = new Limit(3)
    let inside = 0
    let most = 0
    let done = 0
    await Promise.all(Array.from({ length: 60 }, async (_, i) => {
      await tick(i % 7)
      await limit.acquire()
      inside++
      most = Math.max(most, inside)
      expect(limit.taken).toBeLessThanOrEqual(3)
      await tick((i * 13) % 5)
      inside--
      done++
      limit.release()
    }))
    expect(done).toBe(60)
    expect(most).toBe(3)
    expect(limit.taken).toBe(0)
  })

  it('hands a released place to the longest waiter', async () => {
    const limit = new Limit(1)
    await limit.acquire()
    const order: number[] = []
    const waiters = [1, 2, 3].map(async (n) => { await limit.acquire(); order.push(n); limit.release() })
    limit.release()
    await Promise.all(waiters)
    expect(order).toEqual([1, 2, 3])
    expect(limit.taken).toBe(0)
  })

  it('refuses a maximum that admits nobody', () => {
    expect(() => new Limit(0)).toThrow(RangeError)
    expect(() => new Limit(1.5)).toThrow(RangeError)
  })
})
