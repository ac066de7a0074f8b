import { open, type FileHandle } from 'node:fs/promises'
import { sep } from 'node:path'
import type { CID } from 'multiformats/cid'
import { layoutOf, RAW } from '../dag/index.ts'

/** files kept open for serving leaves */
const MAX_OPEN_FILES = 32

export interface LeafLocation {
  /** absolute path of a held model's file */
  path: string
  offset: number
  length: number
}

/**
 * Raw leaves of held models are not kept as block files: their bytes already lie in the model's
 * files (materialized for local runtimes), so a leaf is read from there by offset, like IPFS's
 * filestore. This saves one write of every byte on publish and pull and one file per block.
 * The index maps each leaf CID to where it lies; it is rebuilt from the DAGs' inner nodes.
 */
export class LeafIndex {
  private readonly leaves = new Map<string, LeafLocation[]>()
  private readonly handles = new Map<string, Promise<FileHandle | null>>()

  /** Indexes the leaves of one file, walking its inner nodes with `readNode`. */
  async addFile (root: CID, path: string, size: number, readNode: (cid: CID) => Promise<Uint8Array>): Promise<void> {
    const walk = async (cid: CID, offset: number, length: number): Promise<void> => {
      if (cid.code === RAW) {
        this.add(cid, { path, offset, length })
        return
      }
      for (const child of layoutOf(cid, await readNode(cid)).children) await walk(child.cid, offset + child.offset, child.length)
    }
    await walk(root, 0, size)
  }

  /** Forgets every leaf location inside `dir` (a removed model's files). */
  removeUnder (dir: string): void {
    const prefix = dir.endsWith(sep) ? dir : dir + sep
    for (const [path, file] of this.handles) {
      if (!path.startsWith(prefix)) continue
      this.handles.delete(path)
      // read-only: a failed close loses no data, and the handle is dropped either way
      void file.then(async (h) => { await h?.close() }).catch(() => {})
    }
    for (const [key, locations] of this.leaves) {
      const kept = locations.filter((l) => !l.path.startsWith(prefix))
      if (kept.length === 0) this.leaves.delete(key)
      else this.leaves.set(key, kept)
    }
  }

  /** The leaf's bytes as stored (not re-checked here), or null when no held file has it. */
  async read (cid: CID): Promise<Uint8Array | null> {
    for (const location of this.leaves.get(cid.toString()) ?? []) {
      const file = await this.handle(location.path)
      if (file == null) continue
      const bytes = new Uint8Array(location.length)
      const { bytesRead } = await file.read(bytes, 0, location.length, location.offset)
      if (bytesRead === location.length) return bytes
    }
    return null
  }

  /** Closes every file kept open for reading. */
  async close (): Promise<void> {
    const open = [...this.handles.values()]
    this.handles.clear()
    await Promise.all(open.map(async (file) => { await (await file)?.close() }))
  }

  /**
   * Held files stay open while they are read: a seeder reads one leaf after another from the same
   * file, and an open and a close per leaf were two system calls per block on that hot path.
   */
  private async handle (path: string): Promise<FileHandle | null> {
    let file = this.handles.get(path)
    if (file == null) {
      if (this.handles.size >= MAX_OPEN_FILES) {
        const [oldest, handle] = this.handles.entries().next().value as [string, Promise<FileHandle | null>]
        this.handles.delete(oldest)
        // read-only: a failed close loses no data, and the handle is dropped either way
        void handle.then(async (h) => { await h?.close() }).catch(() => {})
      }
      // a held file that cannot be opened (removed meanwhile) has no leaves to give: read() tries the next location
      file = open(path, 'r').catch(() => null)
      this.handles.set(path, file)
    }
    const handle = await file
    // a file that is missing now may be there later: do not remember the failure
    if (handle == null && this.handles.get(path) === file) this.handles.delete(path)
    return handle
  }

  private add (cid: CID, location: LeafLocation): void {
    const key = cid.toString()
    const locations = this.leaves.get(key)
    if (locations == null) this.leaves.set(key, [location])
    else if (!locations.some((l) => l.path === location.path && l.offset === location.offset)) locations.push(location)
  }
}
