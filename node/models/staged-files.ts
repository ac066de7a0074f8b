import { randomBytes } from 'node:crypto'
import { mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { StagedFile, type AlignedSlots } from './staged-file.ts'

/** A model file's path on disk: its manifest path (relative, POSIX) under `dir`. */
export function localPath (dir: string, path: string): string {
  return join(dir, ...path.split('/'))
}

/** prefix of the throw-away staging directories of publishes */
export const PUBLISH_STAGING_PREFIX = '.staging-'

/**
 * A model's files written into a staging directory while they are being checked, and renamed
 * into place in one step once every file matched: they never appear unchecked or half written.
 */
export class StagedFiles {
  readonly dir: string

  /** `name`: a fixed staging directory (a resumable pull); by default a fresh random one */
  constructor (parent: string, name = `${PUBLISH_STAGING_PREFIX}${randomBytes(6).toString('hex')}`) {
    this.dir = join(parent, name)
  }

  /** Passes the chunks through while writing them to `path` (relative, POSIX); fsyncs at the end. */
  async * write (path: string, chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    const target = localPath(this.dir, path)
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

  /**
   * Opens a file (relative POSIX path) to be written at any offset, keeping what an earlier
   * attempt wrote there (cut to `size`); `resumable` says whether there was any.
   */
  async open (path: string, size: number, slots: AlignedSlots | null = null): Promise<{ file: StagedFile, resumable: boolean }> {
    const target = localPath(this.dir, path)
    await mkdir(dirname(target), { recursive: true })
    return await StagedFile.open(target, size, slots)
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
