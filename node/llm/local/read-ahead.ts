/**
 * Pulls up to `depth` items of an async iterable ahead of its consumer. Generation computes the
 * next token on llama.cpp's native thread while the consumer writes the last one to its socket,
 * instead of one after the other; a consumer that stops reading still stops the source, `depth`
 * items later. Returning from the iteration returns the source (after its pending step).
 */
export async function * readAhead<T> (source: AsyncIterable<T>, depth: number): AsyncGenerator<T> {
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
      wake('onSpace')
      if (next.done === true) return
      yield next.value
    }
  } finally {
    state.stopped = true
    wake('onSpace')
    // runs after the source's pending step: generators take one call at a time
    await iterator.return?.()
    await pumping
  }
}
