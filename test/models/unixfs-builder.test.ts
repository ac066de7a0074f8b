import { randomBytes } from 'node:crypto'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importBytes } from 'ipfs-unixfs-importer'
import { CID } from 'multiformats/cid'
import { describe, expect, it } from 'vitest'
import { buildUnixfsFile } from '../../node/dag/unixfs-builder.ts'
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

describe('fileNodeData: UnixFS file node data, encoded without the protobuf runtime', () => {
  it('equals ipfs-unixfs for ordinary sizes', async () => {
    const { UnixFS } = await import('ipfs-unixfs')
    const { fileNodeData } = await import('../../node/dag/unixfs-builder.ts')
    const sizes = [1n, 127n, 128n, 1048576n, 1073741824n]
    const reference = new UnixFS({ type: 'file' })
    for (const size of sizes) reference.addBlockSize(size)
    expect(Buffer.from(fileNodeData(sizes.reduce((a, b) => a + b, 0n), sizes)).equals(Buffer.from(reference.marshal()))).toBe(true)
  })

  it('writes sizes of 2-4 GiB in full (ipfs-unixfs leaves four bytes of them uninitialised)', async () => {
    const { UnixFS } = await import('ipfs-unixfs')
    const { fileNodeData } = await import('../../node/dag/unixfs-builder.ts')
    const data = fileNodeData(2n ** 31n, [2n ** 30n, 2n ** 30n])
    expect(Buffer.from(data).toString('hex')).toBe('0802' + '18' + '8080808008' + '20' + '8080808004' + '20' + '8080808004')
    const decoded = UnixFS.unmarshal(data)
    expect(decoded.fileSize()).toBe(2n ** 31n)
    expect(decoded.blockSizes).toEqual([2n ** 30n, 2n ** 30n])
    expect(Buffer.from(fileNodeData(3n * 2n ** 31n, [3n * 2n ** 31n])).toString('hex')).toBe('0802' + '18' + '8080808018' + '20' + '8080808018')
  })
})
