import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { BkgError } from '../../lib/bkg-error.ts'
import { writeFileAtomic } from '../../lib/fs.ts'
import { PageStore } from './page-store.ts'
import type { Language, SandboxImage } from './runtime/types.ts'

const Pages = z.array(z.string().regex(/^[0-9a-f]{64}$/).nullable())

/** A snapshot on disk: the image as page hashes; the pages themselves are in the page store. */
const SnapshotManifest = z.object({
  v: z.literal(1),
  id: z.string(),
  language: z.enum(['js', 'python', 'wasm']),
  createdAt: z.string(),
  memory: z.object({ size: z.number().int().nonnegative(), pages: Pages }).nullable(),
  files: z.record(z.string(), z.object({ size: z.number().int().nonnegative(), pages: Pages }))
})
type SnapshotManifest = z.infer<typeof SnapshotManifest>

const SNAPSHOT_ID = /^snap_[0-9a-f]{16}$/

export interface SavedSnapshot {
  memoryBytes: number
  files: number
  /** bytes of pages this snapshot was the first to store */
  storedBytes: number
}

/**
 * Snapshots of sandboxes, content-addressed: `snapshots/<id>.json` lists an image's pages,
 * `pages/` holds each distinct page once, so a snapshot after a small change, or forks of one
 * snapshot, cost only the pages that differ. The manifest is written (atomically, synced) after
 * its pages: a snapshot is there whole or not at all.
 */
export class SnapshotStore {
  private readonly manifests: string
  private readonly pages: PageStore
  /** saves and removals one at a time: a sweep must not take the pages of a save whose manifest is not written yet */
  private tail: Promise<unknown> = Promise.resolve()

  constructor (dir: string) {
    this.manifests = join(dir, 'snapshots')
    this.pages = new PageStore(join(dir, 'pages'))
  }

  async start (): Promise<void> {
    await mkdir(this.manifests, { recursive: true, mode: 0o700 })
  }

  async save (id: string, image: SandboxImage): Promise<SavedSnapshot> {
    return await this.exclusive(async () => await this.write(id, image))
  }

  private async write (id: string, image: SandboxImage): Promise<SavedSnapshot> {
    let storedBytes = 0
    let memory: SnapshotManifest['memory'] = null
    if (image.memory != null) {
      const { pages, written } = await this.pages.put(image.memory)
      memory = { size: image.memory.byteLength, pages }
      storedBytes += written
    }
    const files: SnapshotManifest['files'] = {}
    for (const [path, bytes] of Object.entries(image.files)) {
      const { pages, written } = await this.pages.put(bytes)
      files[path] = { size: bytes.byteLength, pages }
      storedBytes += written
    }
    const manifest: SnapshotManifest = { v: 1, id, language: image.language, createdAt: new Date().toISOString(), memory, files }
    await writeFileAtomic(this.pathOf(id), JSON.stringify(manifest))
    return { memoryBytes: memory?.size ?? 0, files: Object.keys(files).length, storedBytes }
  }

  async load (id: string): Promise<SandboxImage> {
    const manifest = await this.manifest(id)
    const files: Record<string, Uint8Array> = {}
    for (const [path, file] of Object.entries(manifest.files)) files[path] = await this.pages.get(file.pages, file.size)
    const memory = manifest.memory == null ? null : await this.pages.get(manifest.memory.pages, manifest.memory.size)
    return { language: manifest.language as Language, memory, files }
  }

  /** Removes snapshots, then every page no remaining snapshot uses. */
  async remove (ids: Iterable<string>): Promise<void> {
    await this.exclusive(async () => { await this.removeNow([...ids]) })
  }

  private async removeNow (ids: string[]): Promise<void> {
    for (const id of ids) await rm(this.pathOf(id), { force: true })
    const keep = new Set<string>()
    for (const name of await readdir(this.manifests)) {
      if (!name.endsWith('.json')) continue
      const manifest = await this.manifest(name.slice(0, -'.json'.length)).catch(() => null)
      if (manifest == null) continue
      for (const hash of manifest.memory?.pages ?? []) if (hash != null) keep.add(hash)
      for (const file of Object.values(manifest.files)) for (const hash of file.pages) if (hash != null) keep.add(hash)
    }
    await this.pages.sweep(keep)
  }

  private async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn)
    // the caller is told of a failure; the queue only has to go on
    this.tail = result.catch(() => {})
    return await result
  }

  private pathOf (id: string): string {
    if (!SNAPSHOT_ID.test(id)) throw new BkgError('snapshot_not_found', 404, `no snapshot ${id}`)
    return join(this.manifests, `${id}.json`)
  }

  private async manifest (id: string): Promise<SnapshotManifest> {
    let text: string
    try {
      text = await readFile(this.pathOf(id), 'utf8')
    } catch {
      throw new BkgError('snapshot_not_found', 404, `no snapshot ${id} on this node`)
    }
    const parsed = SnapshotManifest.safeParse(JSON.parse(text))
    if (!parsed.success) throw new BkgError('snapshot_corrupt', 500, `snapshot ${id} is not readable: ${parsed.error.issues[0].message}`)
    return parsed.data
  }
}
