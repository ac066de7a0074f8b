import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FilterError, matches, parseFilter } from '../../node/events/event-filter.ts'

const event = (payload: unknown, type = 'reading') => ({ namespace: 'lab', type, payload: payload as any })
const selector = (...filters: string[]) => ({ namespace: 'lab', filters: filters.map(parseFilter) })

describe('payload filters (field=op.value)', () => {
  it('compares numbers as numbers and text as text', () => {
    expect(matches(selector('t=gt.9'), event({ t: 10 }))).toBe(true)
    expect(matches(selector('t=gt.9'), event({ t: 8.5 }))).toBe(false)
    expect(matches(selector('t=lte.10'), event({ t: 10 }))).toBe(true)
    expect(matches(selector('t=lt.-1'), event({ t: -2 }))).toBe(true)
    expect(matches(selector('name=gt.b'), event({ name: 'c' }))).toBe(true)
    expect(matches(selector('name=eq.10'), event({ name: '10' }))).toBe(true)
    expect(matches(selector('ok=eq.true'), event({ ok: true }))).toBe(true)
    expect(matches(selector('v=eq.null'), event({ v: null }))).toBe(true)
  })

  it('handles neq, in, nested paths and missing fields', () => {
    expect(matches(selector('s=neq.x'), event({ s: 'y' }))).toBe(true)
    expect(matches(selector('s=neq.x'), event({}))).toBe(true)
    expect(matches(selector('s=eq.x'), event({}))).toBe(false)
    expect(matches(selector('s=in.(a,b,3)'), event({ s: 3 }))).toBe(true)
    expect(matches(selector('s=in.(a,b)'), event({ s: 'c' }))).toBe(false)
    expect(matches(selector('s=in.()'), event({ s: '' }))).toBe(false)
    expect(matches(selector('sensor.id=eq.7'), event({ sensor: { id: 7 } }))).toBe(true)
    expect(matches(selector('sensor.id=eq.7'), event({ sensor: 7 }))).toBe(false)
    expect(matches(selector('o=eq.x'), event({ o: { nested: 'x' } }))).toBe(false)
    expect(matches(selector('t=gt.1'), event([1, 2]))).toBe(false)
  })

  it('all conditions must hold; namespace and type are part of the selector', () => {
    expect(matches(selector('a=eq.1', 'b=eq.2'), event({ a: 1, b: 2 }))).toBe(true)
    expect(matches(selector('a=eq.1', 'b=eq.2'), event({ a: 1, b: 3 }))).toBe(false)
    expect(matches({ namespace: 'other', filters: [] }, event({}))).toBe(false)
    expect(matches({ namespace: 'lab', type: 'x', filters: [] }, event({}, 'y'))).toBe(false)
  })

  it('refuses malformed filters with FilterError', () => {
    for (const bad of ['t', 't=gt', 't=between.1', '=eq.1', '1t=eq.1', 't=in.1,2', 'a..b=eq.1', `t=in.(${Array(101).fill('x').join(',')})`]) {
      expect(() => parseFilter(bad), bad).toThrow(FilterError)
    }
  })

  it('never throws anything but FilterError on arbitrary text (fuzz)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (text) => {
      try {
        const parsed = parseFilter(text)
        matches({ namespace: 'lab', filters: [parsed] }, event({ a: 1 }))
      } catch (err) {
        expect(err).toBeInstanceOf(FilterError)
      }
    }), { numRuns: 2000 })
  })
})
