import { randomUUID } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import type { BlobBackend, ByteRange, Locator } from './blob-backend.ts'

/** Object bytes as plain files under `<data>/storage/blobs`, one per object or part. */
export class DiskBackend implements BlobBackend {
  readonly name = 'disk'
  private readonly dir: string

  constructor (dir: string) {
    this.dir = dir
  }

  async write (source: AsyncIterable<Uint8Array>): Promise<{ locator: Locator, size: number }> {
    await mkdir(this.dir, { recursive: true })
    const id = randomUUID()
    const temp = join(this.dir, `.${id}.tmp`)
    const file = await open(temp, 'wx', 0o600)
    let size = 0
    try {
      for await (const chunk of source) {
        await file.write(chunk)
        size += chunk.byteLength
      }
      await file.sync()
    } catch (err) {
      await file.close()
      await rm(temp, { force: true })
      throw err
    }
    await file.close()
    await rename(temp, join(this.dir, id))
    return { locator: { file: id }, size }
  }

  read (locator: Locator, range?: ByteRange): Readable {
    return createReadStream(this.path(locator), range == null ? {} : { start: range.start, end: range.end })
  }

  /** Deletes half-written files a crash left behind (their objects were never acknowledged). */
  async removeUnfinished (): Promise<number> {
    // no directory yet (nothing ever written to this backend): nothing unfinished
    const names = await readdir(this.dir).catch(() => [] as string[])
    const unfinished = names.filter((name) => /^\.[0-9a-f-]{36}\.tmp$/.test(name))
    await Promise.all(unfinished.map(async (name) => { await rm(join(this.dir, name), { force: true }) }))
    return unfinished.length
  }

  async remove (locator: Locator): Promise<void> {
    await rm(this.path(locator), { force: true })
  }

  private path (locator: Locator): string {
    const id = String(locator.file)
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error('not a disk locator')
    return join(this.dir, id)
  }
}
