import { LIVE_STDIN_BUFFER_BYTES } from './constants.ts'

/*
 * A live stdin between the main thread and a worker. The guest runs synchronously inside the
 * worker, so it cannot await a message: it blocks in Atomics.wait on a SharedArrayBuffer that
 * the main thread fills from the stream, one chunk at a time.
 *
 * Layout: Int32 state, Int32 length, then the data. The writer puts a chunk in when the state
 * is EMPTY and sets FULL; the reader takes it and sets EMPTY; after the last chunk the writer
 * sets END.
 */
const STATE = 0
const LENGTH = 1
const HEADER_BYTES = 8
const EMPTY = 0
const FULL = 1
const END = 2
/** how often a blocked reader looks whether its run should stop */
const READER_POLL_MS = 10

export function createLiveStdinBuffer (dataBytes = LIVE_STDIN_BUFFER_BYTES): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_BYTES + dataBytes)
}

/** the main thread's end: copies a stream into the channel until it ends or `stop` is called */
export class LiveStdinWriter {
  private readonly header: Int32Array
  private readonly data: Uint8Array
  private stopped = false

  constructor (buffer: SharedArrayBuffer) {
    this.header = new Int32Array(buffer, 0, 2)
    this.data = new Uint8Array(buffer, HEADER_BYTES)
  }

  /** resolves when the stream is in the channel (then END), or when stopped; a failing stream ends it too */
  async pump (source: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of source) {
        for (let offset = 0; offset < chunk.length && !this.stopped; offset += this.data.length) {
          if (!await this.whenEmpty()) return
          const piece = chunk.subarray(offset, offset + this.data.length)
          this.data.set(piece)
          Atomics.store(this.header, LENGTH, piece.length)
          Atomics.store(this.header, STATE, FULL)
          Atomics.notify(this.header, STATE)
        }
        if (this.stopped) return
      }
    } catch {
      // a broken stream is an end of input for the guest
    }
    if (await this.whenEmpty()) {
      Atomics.store(this.header, STATE, END)
      Atomics.notify(this.header, STATE)
    }
  }

  /** the run is over: nobody reads any more */
  stop (): void {
    this.stopped = true
    Atomics.notify(this.header, STATE)
  }

  private async whenEmpty (): Promise<boolean> {
    while (!this.stopped && Atomics.load(this.header, STATE) === FULL) {
      const wait = Atomics.waitAsync(this.header, STATE, FULL, 100)
      if (wait.async) await wait.value
    }
    return !this.stopped
  }
}

/** the worker's end: blocks until a chunk or the end arrives, or until `shouldStop` says so */
export class LiveStdinReader {
  private readonly header: Int32Array
  private readonly data: Uint8Array

  constructor (buffer: SharedArrayBuffer) {
    this.header = new Int32Array(buffer, 0, 2)
    this.data = new Uint8Array(buffer, HEADER_BYTES)
  }

  /** the next chunk, or null at the end of input (or when the run should stop) */
  read (shouldStop: () => boolean): Uint8Array | null {
    for (;;) {
      const state = Atomics.load(this.header, STATE)
      if (state === END) return null
      if (state === FULL) {
        const chunk = this.data.slice(0, Atomics.load(this.header, LENGTH))
        Atomics.store(this.header, STATE, EMPTY)
        Atomics.notify(this.header, STATE)
        return chunk
      }
      if (shouldStop()) return null
      Atomics.wait(this.header, STATE, EMPTY, READER_POLL_MS)
    }
  }
}
