import { describe, expect, it } from 'vitest'
import { FairQueue, LlmBusyError } from '../../node/llm/local/fair-queue.ts'
import { readAhead } from '../../node/llm/local/read-ahead.ts'
import { StopStrings } from '../../node/llm/local/stop-strings.ts'

describe('FairQueue', () => {
  it('serves principals in turn, not in arrival order', async () => {
    const queue = new FairQueue({ slots: 1, maxWaiting: 10, label: 'm' })
    const first = await queue.acquire('greedy')
    const served: string[] = []
    const waiting = ['greedy', 'greedy', 'greedy', 'polite', 'other'].map(async (principal, index) => {
      const release = await queue.acquire(principal)
      served.push(`${principal}${index}`)
      release()
    })
    expect(queue.queued).toBe(5)
    first()
    await Promise.all(waiting)
    expect(served).toEqual(['greedy0', 'polite3', 'other4', 'greedy1', 'greedy2'])
    expect(queue.busy).toBe(0)
  })

  it('refuses beyond its queue with a Retry-After, and lets an aborted waiter go', async () => {
    const queue = new FairQueue({ slots: 1, maxWaiting: 1, label: 'm' })
    const release = await queue.acquire('a')
    const controller = new AbortController()
    const waiter = queue.acquire('b', controller.signal)
    const refused = await queue.acquire('c').catch((err: unknown) => err)
    expect(refused).toBeInstanceOf(LlmBusyError)
    expect((refused as LlmBusyError).status).toBe(429)
    expect((refused as LlmBusyError).retryAfterSeconds).toBeGreaterThanOrEqual(1)
    controller.abort()
    await expect(waiter).rejects.toBeDefined()
    expect(queue.queued).toBe(0)
    release()
    release() // a second release gives nothing back twice
    expect(queue.busy).toBe(0)
  })
})

describe('StopStrings', () => {
  it('never sends a part of a stop string, and cuts at the first one', () => {
    const stops = new StopStrings(['END', 'xy'])
    expect(stops.push('abcE')).toEqual({ text: 'abc', stopped: false })
    expect(stops.push('N')).toEqual({ text: '', stopped: false })
    expect(stops.push('Dmore')).toEqual({ text: '', stopped: true })
  })

  it('releases held text that did not become a stop string', () => {
    const stops = new StopStrings(['END'])
    expect(stops.push('abEN')).toEqual({ text: 'ab', stopped: false })
    expect(stops.push('x')).toEqual({ text: 'ENx', stopped: false })
    expect(stops.push('E')).toEqual({ text: '', stopped: false })
    expect(stops.flush()).toBe('E')
  })

  it('finds a stop string split over many pieces', () => {
    const stops = new StopStrings(['<|end|>'])
    let sent = ''
    let stopped = false
    for (const piece of ['hi <', '|', 'en', 'd|', '> tail']) {
      const out = stops.push(piece)
      sent += out.text
      if (out.stopped) { stopped = true; break }
    }
    expect(stopped).toBe(true)
    expect(sent).toBe('hi ')
  })
})

describe('readAhead', () => {
  async function * counting (made: number[], count = 100): AsyncGenerator<number> {
    for (let index = 0; index < count; index++) {
      made.push(index)
      await new Promise<void>((resolve) => setImmediate(resolve))
      yield index
    }
  }
  const settle = async (): Promise<void> => { for (let round = 0; round < 50; round++) await new Promise<void>((resolve) => setImmediate(resolve)) }

  it('runs the source at most `depth` items ahead of a consumer that stopped reading', async () => {
    const made: number[] = []
    const ahead = readAhead(counting(made), { depth: 4 })
    expect((await ahead.next()).value).toBe(0)
    await settle()
    // one taken, four waiting, one being made when the buffer filled
    expect(made.length).toBeLessThanOrEqual(6)
    await ahead.return(undefined)
    const stopped = made.length
    await settle()
    expect(made.length).toBe(stopped)
  })

  it('hands over what piled up within the interval as one merged item, the first at once', async () => {
    const made: number[] = []
    const merged: number[][] = []
    const items = readAhead(counting(made, 30), { depth: 64, intervalMs: 20, merge: { accepts: () => true, join: (a: number[] | number, b: number[] | number) => [...[a].flat(), ...[b].flat()] as never } })
    for await (const item of items) merged.push([item].flat())
    expect(merged.flat()).toEqual(Array.from({ length: 30 }, (_, index) => index))
    expect(merged[0]).toEqual([0])
    expect(merged.length).toBeLessThan(30)
  })

  it('passes the source\'s error on after the items before it', async () => {
    async function * failing (): AsyncGenerator<number> {
      yield 1
      throw new Error('boom')
    }
    const seen: number[] = []
    await expect((async () => { for await (const item of readAhead(failing(), { depth: 4 })) seen.push(item) })()).rejects.toThrow('boom')
    expect(seen).toEqual([1])
  })
})
