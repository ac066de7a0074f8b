import { describe, expect, it } from 'vitest'
import { HybridClock } from '../../node/events/hybrid-clock.ts'
import { formatHlc } from '../../protocols/events.ts'

describe('hybrid logical clock', () => {
  it('follows the wall clock and never goes backwards', () => {
    let now = 1000
    const clock = new HybridClock(() => now)
    const a = clock.tick()
    const b = clock.tick()
    now = 900
    const c = clock.tick()
    now = 2000
    const d = clock.tick()
    expect([a, b, c, d]).toEqual([formatHlc(1000, 0), formatHlc(1000, 1), formatHlc(1000, 2), formatHlc(2000, 0)])
    expect([...[a, b, c, d]].sort()).toEqual([a, b, c, d])
  })

  it('stamps after what it has seen, but ignores a peer clock far in the future', () => {
    const now = 1000
    const clock = new HybridClock(() => now)
    clock.observe(formatHlc(5000, 3))
    expect(clock.tick()).toBe(formatHlc(5000, 4))
    clock.observe(formatHlc(now + 10 * 60_000, 0))
    expect(clock.tick()).toBe(formatHlc(5000, 5))
  })

  it('carries into the next millisecond when the counter is full', () => {
    const clock = new HybridClock(() => 1)
    clock.observe(formatHlc(1, 99_999))
    expect(clock.tick()).toBe(formatHlc(2, 0))
  })
})
