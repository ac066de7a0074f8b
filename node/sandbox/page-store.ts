import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { BkgError } from '../../lib/bkg-error.ts'
import { exists } from '../../lib/fs.ts'

/** The unit of deduplication: a WebAssembly page, so equal pages of two memory images are stored once. */
export const PAGE_BYTES = 64 * 1024
const ZERO_PAGE = new Uint8Array(PAGE_BYTES)
const HASH = /^[0-9a-f]{64}$/

/**
 * Pages by their SHA-256 (`<dir>/ab/cdef…`). A page is written once, whoever stores it again;
 * every read checks the hash, so a torn or altered page is refused, never handed to a guest.
 * Zero pages are not stored at all (a snapshot names them `null`): most of a fresh heap is zero.
 */
export class PageStore {
  private readonly dir: string

  constructor (dir: string) {
    this.dir = dir
  }

  /** Splits `bytes` into pages and stores those not held yet: their hashes (null for a zero page) and the bytes written. */
  async put (bytes: Uint8Array): Promise<{ pages: Array<string | null>, written: number }> {
    const pages: Array<string | null> = []
    let written = 0
    for (let offset = 0; offset < bytes.byteLength; offset += PAGE_BYTES) {
      const page = bytes.subarray(offset, Math.min(offset + PAGE_BYTES, bytes.byteLength))
      if (page.byteLength === PAGE_BYTES && Buffer.compare(page, ZERO_PAGE) === 0) {
        pages.push(null)
        continue
      }
      const hash = createHash('sha256').update(page).digest('hex')
      pages.push(hash)
      written += await this.write(hash, page)
    }
    return { pages, written }
  }

  /** The bytes of `pages` (as put returned them), `size` long; every page checked against its hash. */
  async get (pages: ReadonlyArray<string | null>, size: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(size)
    await Promise.all(pages.map(async (hash, i) => {
      if (hash == null) return
      const page = await this.read(hash)
      const offset = i * PAGE_BYTES
      if (offset + page.byteLength > size) throw new BkgError('snapshot_corrupt', 500, `page ${hash} runs past the end of its image`)
      bytes.set(page, offset)
    }))
    return bytes
  }

  /** Removes every page not in `keep`; the number removed. */
  async sweep (keep: ReadonlySet<string>): Promise<number> {
    let removed = 0
    for (const prefix of await readdir(this.dir).catch(() => [] as string[])) {
      for (const rest of await readdir(join(this.dir, prefix)).catch(() => [] as string[])) {
        if (keep.has(prefix + rest)) continue
        await rm(join(this.dir, prefix, rest), { force: true })
        removed++
      }
    }
    return removed
  }

  private pathOf (hash: string): string {
    return join(this.dir, hash.slice(0, 2), hash.slice(2))
  }

  private async write (hash: string, page: Uint8Array): Promise<number> {
    const path = this.pathOf(hash)
    // a page that is there already has these bytes: its name is their hash
    if (await exists(path)) return 0
    await mkdir(join(this.dir, hash.slice(0, 2)), { recursive: true })
    // written beside its name and renamed: a reader never sees half a page under a page's hash
    const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`
    try {
      await writeFile(tmp, page, { flag: 'wx' })
      await rename(tmp, path)
      return page.byteLength
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
  }

  private async read (hash: string): Promise<Uint8Array> {
    if (!HASH.test(hash)) throw new BkgError('snapshot_corrupt', 500, `not a page hash: ${hash}`)
    let page: Uint8Array
    try {
      page = await readFile(this.pathOf(hash))
    } catch (err) {
      throw new BkgError('snapshot_corrupt', 500, `page ${hash} of a snapshot is missing: ${(err as Error).message}`)
    }
    if (createHash('sha256').update(page).digest('hex') !== hash) throw new BkgError('snapshot_corrupt', 500, `page ${hash} does not match its hash`)
    return page
  }
}
