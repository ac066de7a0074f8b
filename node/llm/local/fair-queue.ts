import { BkgError } from '../../../lib/bkg-error.ts'

/** A refusal because every slot is taken and the queue is full: the API answers 429 with Retry-After. */
export class LlmBusyError extends BkgError {
  readonly retryAfterSeconds: number

  constructor (message: string, retryAfterSeconds: number) {
    super('llm_busy', 429, message)
    this.retryAfterSeconds = retryAfterSeconds
  }
}

interface Waiter {
  principal: string
  grant: (release: () => void) => void
  fail: (err: Error) => void
}

export interface FairQueueInit {
  /** requests served at once */
  slots: number
  /** requests that may wait for a slot; one more is refused */
  maxWaiting: number
  /** what the queue serves, for messages ("tiny-llama@1.0.0") */
  label: string
}

/**
 * Slots handed out round-robin across principals: a client with a hundred queued requests waits
 * its turn behind one request of each other client, instead of starving them (plain FIFO would
 * serve its hundred first). Within a principal, arrival order.
 */
export class FairQueue {
  private readonly init: FairQueueInit
  private readonly waiting = new Map<string, Waiter[]>()
  private waitingCount = 0
  private busySlots = 0
  /** moving average of how long a slot is held, for Retry-After */
  private averageHoldMs = 1000

  constructor (init: FairQueueInit) {
    this.init = init
  }

  get busy (): number {
    return this.busySlots
  }

  get queued (): number {
    return this.waitingCount
  }

  get slots (): number {
    return this.init.slots
  }

  /** no slot is free: a new request would wait */
  get saturated (): boolean {
    return this.busySlots >= this.init.slots
  }

  /** Seconds until a request queued now is likely served. */
  retryAfterSeconds (): number {
    const rounds = (this.waitingCount + 1) / this.init.slots
    return Math.max(1, Math.ceil(rounds * this.averageHoldMs / 1000))
  }

  /** Waits for a slot; the returned function gives it back (once). */
  async acquire (principal: string, signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted()
    if (this.busySlots < this.init.slots && this.waitingCount === 0) return this.take()
    if (this.waitingCount >= this.init.maxWaiting) {
      throw new LlmBusyError(`${this.init.label} is busy: ${this.busySlots} requests running and ${this.waitingCount} waiting`, this.retryAfterSeconds())
    }
    return await new Promise<() => void>((resolve, reject) => {
      const waiter: Waiter = {
        principal,
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort)
          resolve(release)
        },
        fail: reject
      }
      const onAbort = (): void => {
        if (this.remove(waiter)) reject(signal!.reason ?? new Error('aborted'))
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      let line = this.waiting.get(principal)
      if (line == null) this.waiting.set(principal, line = [])
      line.push(waiter)
      this.waitingCount++
    })
  }

  private take (): () => void {
    this.busySlots++
    const since = performance.now()
    let released = false
    return () => {
      if (released) return
      released = true
      this.averageHoldMs = this.averageHoldMs * 0.8 + (performance.now() - since) * 0.2
      this.busySlots--
      this.next()
    }
  }

  private next (): void {
    if (this.busySlots >= this.init.slots) return
    // the principal that waited longest for its turn is first in the map; served, it goes last
    const first = this.waiting.entries().next()
    if (first.done === true) return
    const [principal, line] = first.value
    const waiter = line.shift()!
    this.waitingCount--
    this.waiting.delete(principal)
    if (line.length > 0) this.waiting.set(principal, line)
    waiter.grant(this.take())
  }

  private remove (waiter: Waiter): boolean {
    const line = this.waiting.get(waiter.principal)
    const at = line?.indexOf(waiter) ?? -1
    if (line == null || at < 0) return false
    line.splice(at, 1)
    this.waitingCount--
    if (line.length === 0) this.waiting.delete(waiter.principal)
    return true
  }

  /** Refuses everyone still waiting (the model is being unloaded). */
  failAll (err: Error): void {
    for (const line of this.waiting.values()) for (const waiter of line) waiter.fail(err)
    this.waiting.clear()
    this.waitingCount = 0
  }
}
