import { randomBytes } from 'node:crypto'
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'

/**
 * A model's files written into a staging directory while they are being checked, and renamed
 * into place in one step once every file matched: they never appear unchecked or half written.
 */
export class StagedFiles {
  readonly dir: string

  constructor (parent: string) {
    this.dir = join(parent, `.staging-${randomBytes(6).toString('hex')}`)
  }

  /** Passes the chunks through while writing them to `path` (relative, POSIX); fsyncs at the end. */
  async * write (path: string, chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    const target = join(this.dir, ...path.split('/'))
    await mkdir(dirname(target), { recursive: true })
    const out = await open(target, 'wx', 0o644)
    try {
      for await (const chunk of chunks) {
        await out.write(chunk)
        yield chunk
      }
      await out.sync()
    } finally {
      await out.close()
    }
  }

  /** Creates a file for writing at any offset (relative POSIX path). */
  async open (path: string): Promise<FileHandle> {
    const target = join(this.dir, ...path.split('/'))
    await mkdir(dirname(target), { recursive: true })
    return await open(target, 'wx+', 0o644)
  }

  /** Replaces `location` with the staged files. */
  async commit (location: string): Promise<void> {
    await mkdir(dirname(location), { recursive: true })
    await rm(location, { recursive: true, force: true })
    await rename(this.dir, location)
  }

  async discard (): Promise<void> {
    await rm(this.dir, { recursive: true, force: true })
  }
}
