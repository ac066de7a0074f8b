/**
 * Pulls up to `depth` items of an async iterable ahead of its consumer. Generation computes the
 * next token on llama.cpp's native thread while the consumer writes the last one to its socket,
 * instead of one after the other; a consumer that stops reading still stops the source, `depth`
 * items later. Returning from the iteration returns the source (after its pending step).
 * `merge` joins items that are ready together: a consumer slower than the source then gets fewer,
 * larger items instead of falling further behind.
 */
export async function * readAhead<T> (source: AsyncIterable<T>, depth: number, merge?: (first: T, then: T) => T | null): AsyncGenerator<T> {
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
  try {
    while (true) {
      const next = ready.shift()
      if (next == null) {
        if (state.failure != null) throw state.failure.error
        await new Promise<void>((resolve) => { state.onReady = resolve })
        continue
      }
      if (next.done === true) return
      // items that piled up while the consumer was busy go out as one (one socket write, not many)
      let value = next.value
      while (merge != null && ready.length > 0 && ready[0].done !== true) {
        const merged = merge(value, ready[0].value)
        if (merged == null) break
        value = merged
        ready.shift()
      }
      wake('onSpace')
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
