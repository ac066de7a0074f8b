export interface ReadAheadOptions<T> {
  /** items pulled ahead of the consumer at most: a consumer that stops reading stops the source this many items later */
  depth: number
  /** items that may be joined (`accepts`), and how two of them become one */
  merge?: { accepts: (item: T) => boolean, join: (first: T, then: T) => T }
  /**
   * Mergeable items are handed over at most this often: what the source makes in between goes out
   * as one item (one socket write instead of one per token). The first item, and any item after a
   * longer pause, goes out at once.
   */
  intervalMs?: number
}

/**
 * Pulls items of an async iterable ahead of its consumer. Generation computes the next tokens while
 * the consumer writes the last ones to its socket, instead of one after the other. Returning from
 * the iteration returns the source (after its pending step).
 */
export async function * readAhead<T> (source: AsyncIterable<T>, options: ReadAheadOptions<T>): AsyncGenerator<T> {
  const { depth, merge, intervalMs = 0 } = options
  const iterator = source[Symbol.asyncIterator]()
  const ready: Array<IteratorResult<T>> = []
  // shared with the pump: closures would narrow plain `let`s away
  const state: { failure: { error: unknown } | null, stopped: boolean, onReady: (() => void) | null, onSpace: (() => void) | null } = {
    failure: null,
    stopped: false,
    onReady: null,
    onSpace: null
  }
  const wake = (which: 'onReady' | 'onSpace'): void => {
    const resolve = state[which]
    state[which] = null
    resolve?.()
  }
  const pump = async (): Promise<void> => {
    try {
      while (!state.stopped) {
        if (ready.length >= depth) {
          await new Promise<void>((resolve) => { state.onSpace = resolve })
          continue
        }
        const next = await iterator.next()
        ready.push(next)
        wake('onReady')
        if (next.done === true) return
      }
    } catch (err) {
      state.failure = { error: err }
      wake('onReady')
    }
  }
  const pumping = pump()
  const mergeable = (item: T): boolean => merge?.accepts(item) === true
  let lastHandedOver = -Infinity
  try {
    while (true) {
      if (ready.length === 0) {
        if (state.failure != null) throw state.failure.error
        await new Promise<void>((resolve) => { state.onReady = resolve })
        continue
      }
      const head = ready[0]
      if (head.done === true) return
      // a quick source: let a few more items come before handing over (a full buffer or the end goes at once)
      const wait = lastHandedOver + intervalMs - performance.now()
      if (wait > 0 && mergeable(head.value) && ready.length < depth && ready.at(-1)?.done !== true && state.failure == null) {
        await new Promise<void>((resolve) => { setTimeout(resolve, wait) })
        continue
      }
      ready.shift()
      let value = head.value
      while (merge != null && mergeable(value) && ready.length > 0 && ready[0].done !== true && mergeable(ready[0].value)) {
        value = merge.join(value, ready.shift()!.value as T)
      }
      wake('onSpace')
      // the interval runs between mergeable items: the first one after another kind goes at once
      lastHandedOver = mergeable(value) ? performance.now() : -Infinity
      yield value
    }
  } finally {
    state.stopped = true
    wake('onSpace')
    // runs after the source's pending step: generators take one call at a time
    await iterator.return?.()
    await pumping
  }
}
