import { createHash, randomBytes } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FileAssembler } from '../../node/models/file-assembler.ts'
import { StagedFile } from '../../node/models/staged-file.ts'
import { PackageError } from '../../protocols/model-package.ts'
import { tempDir } from '../helpers/mesh.ts'

const CHUNK = 1024 * 1024

async function leafCid (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(bytes))
}

describe('FileAssembler: leaves at their offsets, whole-file sha256 in order', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let n = 0
  beforeAll(async () => { tmp = await tempDir() })
  afterAll(async () => { await tmp?.remove() })

  async function assembler (content: Buffer, resumable = false, sha = createHash('sha256').update(content).digest('hex')): Promise<{ a: FileAssembler, path: string }> {
    const path = join(tmp.dir, `f${n++}`)
    const { file } = await StagedFile.open(path, content.byteLength)
    return { a: new FileAssembler(file, { path: 'weights.bin', size: content.byteLength, sha256: sha, resumable }), path }
  }

  it('assembles leaves arriving in any order, as received chunk lists too, and checks the sha256', async () => {
    const content = randomBytes(70 * CHUNK + 123)
    const { a, path } = await assembler(content)
    const offsets = Array.from({ length: 71 }, (_, i) => i * CHUNK).sort(() => Math.random() - 0.5)
    for (const offset of offsets) {
      const leaf = content.subarray(offset, Math.min(offset + CHUNK, content.byteLength))
      await a.put(offset, offset % 2 === 0 ? leaf : new Uint8ArrayList(leaf.subarray(0, 100), leaf.subarray(100)))
    }
    await a.finish()
    await a.close()
    expect((await readFile(path)).equals(content)).toBe(true)
  })

  it('reads back leaves that arrived beyond the in-memory window (the last one first)', async () => {
    const content = randomBytes(80 * CHUNK)
    const { a } = await assembler(content)
    for (let i = 79; i >= 0; i--) await a.put(i * CHUNK, content.subarray(i * CHUNK, (i + 1) * CHUNK))
    await a.finish()
    await a.close()
  })

  it('refuses a file whose bytes do not match the signed sha256, or that misses bytes', async () => {
    const content = randomBytes(3 * CHUNK)
    const { a } = await assembler(content, false, 'ab'.repeat(32))
    for (let i = 0; i < 3; i++) await a.put(i * CHUNK, content.subarray(i * CHUNK, (i + 1) * CHUNK))
    await expect(a.finish()).rejects.toBeInstanceOf(PackageError)
    await a.close()
    const { a: short } = await assembler(content)
    await short.put(0, content.subarray(0, CHUNK))
    await expect(short.finish()).rejects.toThrow(/could be assembled/)
    await short.close()
  })

  it('refuses a leaf outside the signed size', async () => {
    const { a } = await assembler(randomBytes(CHUNK))
    await expect(a.put(CHUNK - 10, randomBytes(20))).rejects.toBeInstanceOf(PackageError)
    await a.close()
  })

  it('takes leaves an earlier attempt wrote only when they still match their CID', async () => {
    const content = randomBytes(4 * CHUNK)
    const { a: first, path } = await assembler(content)
    await first.put(0, content.subarray(0, CHUNK))
    await first.put(2 * CHUNK, content.subarray(2 * CHUNK, 3 * CHUNK))
    await first.close()
    // damage the second written leaf on disk
    const damaged = await readFile(path)
    damaged[2 * CHUNK + 5] ^= 1
    const handle = await open(path, 'r+')
    await handle.write(damaged, 0, damaged.byteLength, 0)
    await handle.close()

    const { file } = await StagedFile.open(path, content.byteLength)
    const again = new FileAssembler(file, { path: 'weights.bin', size: content.byteLength, sha256: createHash('sha256').update(content).digest('hex'), resumable: true })
    const leaves = [0, 1, 2, 3].map((i) => content.subarray(i * CHUNK, (i + 1) * CHUNK))
    expect(await again.existing(0, CHUNK, await leafCid(leaves[0]))).not.toBeNull()
    expect(await again.existing(CHUNK, CHUNK, await leafCid(leaves[1]))).toBeNull()
    expect(await again.existing(2 * CHUNK, CHUNK, await leafCid(leaves[2]))).toBeNull()
    for (const i of [1, 2, 3]) await again.put(i * CHUNK, leaves[i])
    await again.finish()
    await again.close()
    expect((await readFile(path)).equals(content)).toBe(true)
  })
})
