import { createHash, type Hash } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import type { Uint8ArrayList } from 'uint8arraylist'
import { PackageError } from '../../protocols/model-package.ts'
import type { StagedFile } from './staged-file.ts'
import { assertBlockMatches } from '../dag/index.ts'

/** bytes of out-of-order leaves kept in memory for hashing; later ones are read back from disk */
const REORDER_WINDOW_BYTES = 16 * 1024 * 1024

/**
 * Writes a file's verified leaves straight to their offsets in the staged file as they arrive,
 * in any order, and takes the whole-file sha256 in order alongside: a leaf that arrives ahead of
 * the hash position is kept until its turn (up to a bounded window, beyond which it is read back
 * from the file). When the last byte is in, `finish` compares size and sha256 with the signed
 * manifest and fsyncs; no pass re-reads the file afterwards.
 */
export class FileAssembler {
  private readonly file: StagedFile
  private readonly path: string
  private readonly size: number
  private readonly sha256: string
  private readonly hash: Hash = createHash('sha256')
  private hashed = 0
  /** offset → leaf bytes (as received), or its length when it has to be read back from the file */
  private readonly ahead = new Map<number, Uint8Array[] | number>()
  private aheadBytes = 0
  private hashing: Promise<void> = Promise.resolve()
  private scratch = new Uint8Array(0)

  /** the staged file held bytes from an earlier attempt when it was opened */
  private readonly resumable: boolean

  constructor (file: StagedFile, init: { path: string, size: number, sha256: string, resumable: boolean }) {
    this.file = file
    this.resumable = init.resumable
    this.path = init.path
    this.size = init.size
    this.sha256 = init.sha256
  }

  /** Writes one leaf (already checked against its CID) at `offset`. */
  async put (offset: number, leaf: Uint8Array | Uint8ArrayList): Promise<void> {
    if (offset < 0 || offset + leaf.byteLength > this.size) {
      throw new PackageError('content_mismatch', `${this.path}: a block lies outside the file's signed size`)
    }
    if (offset < this.hashed || this.ahead.has(offset)) return
    const chunks = leaf instanceof Uint8Array ? [leaf] : [...leaf]
    // one syscall per leaf: a leaf arrives as a few dozen transport frames
    await this.file.write(offset, chunks, leaf.byteLength)
    await this.hashInOrder(offset, chunks, leaf.byteLength)
  }

  /** A leaf an earlier attempt wrote at `offset`, if its bytes there still match its CID: then it counts as put. */
  async existing (offset: number, length: number, cid: CID): Promise<Uint8Array | null> {
    if (!this.resumable || offset + length > this.size || offset < this.hashed || this.ahead.has(offset)) return null
    const bytes = await this.read(offset, length)
    // never written (a hole in the staged file): not worth a hash
    if (length > 0 && Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(Buffer.alloc(bytes.byteLength))) return null
    try {
      assertBlockMatches(cid, bytes)
    } catch {
      // bytes left by an interrupted write: this leaf is fetched again
      return null
    }
    await this.hashInOrder(offset, [bytes], length)
    return bytes
  }

  /** Bytes already written (a leaf placed earlier, copied to another place). */
  async read (offset: number, length: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(length)
    const bytesRead = await this.file.readInto(bytes, length, offset)
    return bytesRead === length ? bytes : bytes.subarray(0, bytesRead)
  }

  private async hashInOrder (offset: number, chunks: Uint8Array[], length: number): Promise<void> {
    if (this.aheadBytes + length <= REORDER_WINDOW_BYTES || offset === this.hashed) {
      this.ahead.set(offset, chunks)
      this.aheadBytes += length
    } else {
      this.ahead.set(offset, length)
    }
    this.hashing = this.hashing.then(async () => { await this.advance() })
    await this.hashing
  }

  private async advance (): Promise<void> {
    for (let next = this.ahead.get(this.hashed); next != null; next = this.ahead.get(this.hashed)) {
      this.ahead.delete(this.hashed)
      let chunks: Uint8Array[]
      if (typeof next === 'number') {
        // read back into one reused buffer: the hash copies what it needs
        if (this.scratch.byteLength < next) this.scratch = new Uint8Array(next)
        const bytesRead = await this.file.readInto(this.scratch, next, this.hashed)
        chunks = [this.scratch.subarray(0, bytesRead)]
      } else {
        chunks = next
      }
      for (const chunk of chunks) {
        this.hash.update(chunk)
        this.hashed += chunk.byteLength
        if (typeof next !== 'number') this.aheadBytes -= chunk.byteLength
      }
    }
  }

  /** Throws PackageError unless every byte arrived and the file matches its signed sha256. */
  async finish (): Promise<void> {
    await this.hashing
    if (this.hashed !== this.size || this.ahead.size > 0) {
      throw new PackageError('content_mismatch', `${this.path}: ${this.hashed} of ${this.size} bytes could be assembled in order`)
    }
    if (this.hash.digest('hex') !== this.sha256) {
      throw new PackageError('content_mismatch', `${this.path} does not match its signed sha256`)
    }
    await this.file.sync()
  }

  async close (): Promise<void> {
    await this.file.close()
  }
}
