import { FsBlockstore } from 'blockstore-fs'
import { CID } from 'multiformats/cid'
import type { Logger } from 'pino'
import { layoutOf, RAW, buildUnixfsFile, assertBlockMatches } from '../../dag/index.ts'
import { DEFAULT_BLOCK_CHUNK_BYTES, DEFAULT_BLOCKS_RECENT_MS } from '../constants.ts'
import type { BlobBackend, ByteRange, Locator } from './blob-backend.ts'

export interface BlocksBackendInit {
  /** the blockstore's directory, `<data>/storage/blocks` */
  dir: string
  /** UnixFS chunk size of new objects (a different size gives the same bytes different CIDs) */
  chunkBytes?: number
  /** blocks written this recently are never collected: their object's row may not be committed yet */
  recentMs?: number
}

export interface BlocksBackendComponents {
  /** the root CIDs of every object and part kept in this backend: what a removal must not touch */
  liveRoots: () => Promise<string[]>
  log: Pick<Logger, 'warn'>
}

/**
 * Object bytes as a UnixFS DAG in a Helia-compatible blockstore (blockstore-fs) under
 * `<data>/storage/blocks`: identical content is stored once, every block is checked against its
 * CID when read, and an object's root CID is a content address peers could fetch by.
 * Removing an object deletes only the blocks no other object's DAG reaches.
 */
export class BlocksBackend implements BlobBackend {
  readonly name = 'blocks'
  private readonly store: FsBlockstore
  private readonly liveRoots: () => Promise<string[]>
  private readonly log: Pick<Logger, 'warn'>
  private readonly chunkBytes: number
  private readonly recentMs: number
  private readonly recent = new Map<string, number>()
  private opened: Promise<void> | undefined

  constructor (components: BlocksBackendComponents, init: BlocksBackendInit) {
    this.store = new FsBlockstore(init.dir)
    this.liveRoots = components.liveRoots
    this.log = components.log
    this.chunkBytes = init.chunkBytes ?? DEFAULT_BLOCK_CHUNK_BYTES
    this.recentMs = init.recentMs ?? DEFAULT_BLOCKS_RECENT_MS
  }

  async write (source: AsyncIterable<Uint8Array>): Promise<{ locator: Locator, size: number }> {
    await this.open()
    const now = Date.now()
    const { cid, size } = await buildUnixfsFile(source, this.chunkBytes, async (block, bytes) => {
      this.recent.set(block.toString(), now)
      await this.store.put(block, bytes)
    })
    return { locator: { cid: cid.toString() }, size }
  }

  async * read (locator: Locator, range?: ByteRange): AsyncIterable<Uint8Array> {
    await this.open()
    const start = range?.start ?? 0
    const end = range?.end ?? Number.MAX_SAFE_INTEGER
    const walk = async function * (this: BlocksBackend, cid: CID, offset: number): AsyncGenerator<Uint8Array> {
      const block = await this.block(cid)
      if (cid.code === RAW) {
        const from = Math.max(0, start - offset)
        const to = Math.min(block.byteLength, end - offset + 1)
        if (from < to) yield block.subarray(from, to)
        return
      }
      const layout = layoutOf(cid, block)
      if (layout.data != null) {
        const from = Math.max(0, start - offset)
        const to = Math.min(layout.data.byteLength, end - offset + 1)
        if (from < to) yield layout.data.subarray(from, to)
      }
      for (const child of layout.children) {
        const first = offset + child.offset
        if (first + child.length <= start || first > end) continue
        yield * walk.call(this, child.cid, first)
      }
    }
    yield * walk.call(this, CID.parse(String(locator.cid)), 0)
  }

  async remove (locator: Locator): Promise<void> {
    await this.open()
    const reachable = new Set<string>()
    for (const root of await this.liveRoots()) {
      try {
        await this.mark(CID.parse(root), reachable)
      } catch (err) {
        // what the live object still needs is unknown: deleting anything now could take its blocks
        this.log.warn({ err, root, removed: String(locator.cid) }, 'a live object\'s DAG could not be walked (missing or damaged block): the removed object\'s blocks stay on disk this time')
        return
      }
    }
    const doomed = new Set<string>()
    await this.mark(CID.parse(String(locator.cid)), doomed).catch((err: unknown) => {
      this.log.warn({ err, root: String(locator.cid) }, 'a removed object\'s DAG could not be walked: the blocks below the break stay on disk')
    })
    const cutoff = Date.now() - this.recentMs
    for (const [cid, at] of this.recent) if (at < cutoff) this.recent.delete(cid)
    let failed = 0
    let firstError: unknown
    for (const cid of doomed) {
      if (reachable.has(cid) || this.recent.has(cid)) continue
      await this.store.delete(CID.parse(cid)).catch((err: unknown) => {
        failed++
        firstError ??= err
      })
    }
    if (failed > 0) this.log.warn({ err: firstError, failed, root: String(locator.cid) }, 'some blocks of a removed object could not be deleted: they stay on disk')
  }

  async close (): Promise<void> {
    if (this.opened != null) await this.store.close()
  }

  private async open (): Promise<void> {
    this.opened ??= this.store.open()
    await this.opened
  }

  /** every block of the DAG: inner nodes are read, leaves only named */
  private async mark (cid: CID, into: Set<string>): Promise<void> {
    if (into.has(cid.toString())) return
    into.add(cid.toString())
    if (cid.code === RAW) return
    for (const child of layoutOf(cid, await this.block(cid)).children) await this.mark(child.cid, into)
  }

  private async block (cid: CID): Promise<Uint8Array> {
    const parts: Uint8Array[] = []
    for await (const part of this.store.get(cid)) parts.push(part)
    const bytes = parts.length === 1 ? parts[0] : Buffer.concat(parts)
    assertBlockMatches(cid, bytes)
    return bytes
  }
}
