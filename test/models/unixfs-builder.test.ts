import { randomBytes } from 'node:crypto'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importBytes } from 'ipfs-unixfs-importer'
import { CID } from 'multiformats/cid'
import { describe, expect, it } from 'vitest'
import { buildUnixfsFile } from '../../node/models/unixfs-builder.ts'
import { referenceImporterOptions } from './helpers.ts'

async function * pieces (bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.byteLength; at += size) yield bytes.subarray(at, Math.min(at + size, bytes.byteLength))
}

async function ours (bytes: Uint8Array, chunkSize: number, pieceSize: number): Promise<{ root: string, blocks: Map<string, Uint8Array> }> {
  const blocks = new Map<string, Uint8Array>()
  const { cid, size } = await buildUnixfsFile(pieces(bytes, pieceSize), chunkSize, (c, block) => { blocks.set(c.toString(), block) })
  expect(size).toBe(bytes.byteLength)
  return { root: cid.toString(), blocks }
}

async function reference (bytes: Uint8Array, chunkSize: number): Promise<{ root: string, blocks: MemoryBlockstore }> {
  const store = new MemoryBlockstore()
  const { cid } = await importBytes(bytes, store, referenceImporterOptions(chunkSize))
  return { root: cid.toString(), blocks: store }
}

describe('buildUnixfsFile: the UnixFS profile of package content', () => {
  const cases: Array<[string, number, number]> = [
    // [what, chunks (fractional: a short last chunk), chunk size]
    ['empty file', 0, 64],
    ['less than a chunk', 0.5, 64],
    ['exactly one chunk', 1, 64],
    ['one chunk and a byte', 1 + 1 / 64, 64],
    ['a full node', 1024, 16],
    ['a full node and a leaf', 1025, 16],
    ['two levels, partly filled', 1024 * 3 + 7, 8],
    ['three levels', 1024 * 1024 + 3, 2]
  ]
  for (const [what, chunks, chunkSize] of cases) {
    it(`matches ipfs-unixfs-importer block for block: ${what}`, async () => {
      const bytes = randomBytes(Math.round(chunks * chunkSize))
      const expected = await reference(bytes, chunkSize)
      // fed in pieces that do not line up with chunks
      const got = await ours(bytes, chunkSize, Math.max(1, Math.floor(chunkSize * 2.5) + 3))
      expect(got.root).toBe(expected.root)
      for (const [cid, block] of got.blocks) {
        const parts: Uint8Array[] = []
        for await (const part of expected.blocks.get(CID.parse(cid))) parts.push(part)
        expect(Buffer.from(block).equals(Buffer.concat(parts)), cid).toBe(true)
      }
    }, 120_000)
  }

  it('is deterministic: the same bytes always give the same root', async () => {
    const bytes = randomBytes(1024 * 4 + 5)
    const roots = new Set<string>()
    for (let i = 0; i < 5; i++) roots.add((await ours(bytes, 4, 1 + i * 7)).root)
    expect(roots.size).toBe(1)
  })
})
