import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { Limit } from '../../lib/limit.ts'

/**
 * O_DIRECT wants the buffer address, the file offset and the length aligned to the device's
 * logical block size (512 B or 4 KiB); a memory page covers both.
 */
const ALIGNMENT = 4096
const WASM_PAGE_BYTES = 64 * 1024
/** written bytes between two background flushes to the device */
const FLUSH_EVERY_BYTES = 32 * 1024 * 1024

/** the one WebAssembly class used here (the project's TypeScript lib, es2024 without DOM, has no WebAssembly types) */
const { Memory: WasmMemory } = (globalThis as unknown as { WebAssembly: { Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly

/**
 * Page-aligned buffers to write from with O_DIRECT, taken and given back per write. Node has no
 * aligned allocation, but a WebAssembly memory is mapped whole pages at a time, so the slots are
 * cut from one. Waiting for a free slot is the writers' backpressure.
 */
export class AlignedSlots {
  readonly slotBytes: number
  private readonly free: Uint8Array[]
  private readonly places: Limit

  constructor (count: number, maxWriteBytes: number) {
    this.slotBytes = Math.ceil(maxWriteBytes / ALIGNMENT) * ALIGNMENT
    const memory = new WasmMemory({ initial: Math.ceil(count * this.slotBytes / WASM_PAGE_BYTES) })
    this.free = Array.from({ length: count }, (_, i) => new Uint8Array(memory.buffer, i * this.slotBytes, this.slotBytes))
    this.places = new Limit(count)
  }

  async take (): Promise<Uint8Array> {
    // a place granted is a slot on the free list: give() puts it back before handing the place on
    await this.places.acquire()
    return this.free.pop()!
  }

  give (slot: Uint8Array): void {
    this.free.push(slot)
    this.places.release()
  }
}

/**
 * A file being assembled at random offsets. Whole aligned blocks are written with O_DIRECT from
 * `slots`: on these VMs the first touch of a page costs about 3.4 ms per MiB, and a new file
 * written through the page cache cost a fresh puller 0.5-1 s of system CPU per 256 MiB, against
 * 0.06-0.12 s direct (measured, docs/architecture.md). Other writes (an unaligned tail, a file
 * system without O_DIRECT) go through the page cache. Written data is flushed to the device in
 * the background every FLUSH_EVERY_BYTES, so the final `sync` waits for little.
 */
export class StagedFile {
  /** bytes written with O_DIRECT, and flushes started while writing: for tests and diagnostics */
  directBytes = 0
  backgroundFlushes = 0
  private readonly file: FileHandle
  private readonly path: string
  /** opened at the first write that can go direct; null where the file system refuses O_DIRECT */
  private direct: Promise<FileHandle | null> | undefined
  private directRefused = false
  private readonly slots: AlignedSlots | null
  private unflushed = 0
  private flushing: Promise<void> | null = null
  private flushError: Error | null = null

  private constructor (file: FileHandle, path: string, slots: AlignedSlots | null) {
    this.file = file
    this.path = path
    this.slots = slots
  }

  /**
   * Opens `path` for reading and writing at any offset, keeping what an earlier attempt wrote
   * there (cut to `size`); `resumable` says whether there was any. Without `slots`, or where the
   * file system refuses O_DIRECT, every write goes through the page cache.
   */
  static async open (path: string, size: number, slots: AlignedSlots | null = null): Promise<{ file: StagedFile, resumable: boolean }> {
    const file = await open(path, 'a+', 0o644).then(async (probe) => { await probe.close(); return await open(path, 'r+') })
    try {
      const resumable = (await file.stat()).size > 0
      await file.truncate(size)
      return { file: new StagedFile(file, path, slots), resumable }
    } catch (err) {
      await file.close()
      throw err
    }
  }

  /** Writes `chunks` (together `length` bytes) at `offset`. */
  async write (offset: number, chunks: Uint8Array[], length: number): Promise<void> {
    if (this.flushError != null) throw this.flushError
    if (!await this.writeDirect(offset, chunks, length)) {
      const { bytesWritten } = await this.file.writev(chunks, offset)
      if (bytesWritten !== length) throw new Error(`short write (${bytesWritten} of ${length} bytes)`)
    }
    this.unflushed += length
    if (this.unflushed >= FLUSH_EVERY_BYTES && this.flushing == null) {
      this.unflushed = 0
      this.backgroundFlushes++
      this.flushing = this.file.datasync()
        .catch((err: Error) => { this.flushError = err })
        .finally(() => { this.flushing = null })
    }
  }

  /** False when this write has to go through the page cache. */
  private async writeDirect (offset: number, chunks: Uint8Array[], length: number): Promise<boolean> {
    if (this.slots == null || this.directRefused || constants.O_DIRECT == null) return false
    if (length === 0 || offset % ALIGNMENT !== 0 || length % ALIGNMENT !== 0 || length > this.slots.slotBytes) return false
    // a file system without O_DIRECT (tmpfs, some overlays): the writes go through the page cache instead
    this.direct ??= open(this.path, constants.O_WRONLY | constants.O_DIRECT).catch(() => null)
    const direct = await this.direct
    if (direct == null) return false
    const slot = await this.slots.take()
    try {
      let at = 0
      for (const chunk of chunks) {
        slot.set(chunk, at)
        at += chunk.byteLength
      }
      const { bytesWritten } = await direct.write(slot, 0, length, offset)
      if (bytesWritten !== length) throw new Error(`short write (${bytesWritten} of ${length} bytes)`)
      this.directBytes += length
      return true
    } catch (err) {
      // the device wants a larger alignment, or the file system takes O_DIRECT at open only
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err
      this.directRefused = true
      return false
    } finally {
      this.slots.give(slot)
    }
  }

  /** Reads up to `length` bytes at `position` into `target`; returns the count read. */
  async readInto (target: Uint8Array, length: number, position: number): Promise<number> {
    const { bytesRead } = await this.file.read(target, 0, length, position)
    return bytesRead
  }

  /** Every written byte is on the device. */
  async sync (): Promise<void> {
    await this.flushing
    if (this.flushError != null) throw this.flushError
    await this.file.sync()
  }

  async close (): Promise<void> {
    await this.flushing
    const direct = await this.direct
    await Promise.all([this.file.close(), direct?.close()])
  }
}
