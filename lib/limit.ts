/**
 * At most `max` holders at once: `acquire` waits for a place, `release` hands it to the next
 * waiter (or frees it). Handing over instead of waking everyone to re-check means no waiter is
 * ever left behind and the count never overshoots.
 */
export class Limit {
  private readonly max: number
  private holders = 0
  private readonly waiting: Array<() => void> = []

  constructor (max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`a limit of ${max} admits nobody`)
    this.max = max
  }

  /** places taken now */
  get taken (): number {
    return this.holders
  }

  async acquire (): Promise<void> {
    if (this.holders < this.max) {
      this.holders++
      return
    }
    await new Promise<void>((resolve) => { this.waiting.push(resolve) })
  }

  release (): void {
    const next = this.waiting.shift()
    if (next != null) next()
    else this.holders--
  }
}
