import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AlignedSlots, StagedFile } from '../../node/models/staged-file.ts'
import { tempDir } from '../helpers/mesh.ts'

const CHUNK = 1024 * 1024

/** whether the file system under `dir` takes O_DIRECT (ext4 does; tmpfs does not) */
async function takesDirectIo (dir: string): Promise<boolean> {
  if (constants.O_DIRECT == null) return false
  const probe = await open(join(dir, 'probe'), constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT).catch(() => null)
  await probe?.close()
  return probe != null
}

describe('StagedFile: leaves written at their offsets, direct where the file system allows', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let direct: boolean
  let n = 0
  beforeAll(async () => {
    tmp = await tempDir()
    direct = await takesDirectIo(tmp.dir)
  })
  afterAll(async () => { await tmp?.remove() })

  it('writes aligned leaves from more writers than slots, in any order, and the bytes on disk are exact', async () => {
    const content = randomBytes(24 * CHUNK + 777)
    const path = join(tmp.dir, `f${n++}`)
    const { file, resumable } = await StagedFile.open(path, content.byteLength, new AlignedSlots(2, CHUNK))
    expect(resumable).toBe(false)
    const offsets = Array.from({ length: 25 }, (_, i) => i * CHUNK).sort(() => Math.random() - 0.5)
    // 25 writes at once on 2 slots: the slots are the backpressure
    await Promise.all(offsets.map(async (offset) => {
      const leaf = content.subarray(offset, Math.min(offset + CHUNK, content.byteLength))
      // as a transport delivers it: several chunks
      await file.write(offset, [leaf.subarray(0, 1000), leaf.subarray(1000, 70_000), leaf.subarray(70_000)], leaf.byteLength)
    }))
    await file.sync()
    await file.close()
    expect((await readFile(path)).equals(content)).toBe(true)
    // the 24 whole leaves go direct where O_DIRECT works; the 777-byte tail never can
    expect(file.directBytes).toBe(direct ? 24 * CHUNK : 0)
  })

  it('writes through the page cache without slots, at unaligned offsets and for chunk sizes that are no multiple of a page', async () => {
    const content = randomBytes(5 * 100_000)
    const withoutSlots = join(tmp.dir, `f${n++}`)
    const unaligned = join(tmp.dir, `f${n++}`)
    const a = (await StagedFile.open(withoutSlots, content.byteLength)).file
    const b = (await StagedFile.open(unaligned, content.byteLength, new AlignedSlots(4, 100_000))).file
    for (let offset = 0; offset < content.byteLength; offset += 100_000) {
      const leaf = content.subarray(offset, offset + 100_000)
      await a.write(offset, [leaf], leaf.byteLength)
      await b.write(offset, [leaf], leaf.byteLength)
    }
    for (const file of [a, b]) {
      await file.sync()
      await file.close()
      expect(file.directBytes).toBe(0)
    }
    expect((await readFile(withoutSlots)).equals(content)).toBe(true)
    expect((await readFile(unaligned)).equals(content)).toBe(true)
  })

  it('reads back what it wrote, and keeps an earlier attempt\'s bytes when reopened', async () => {
    const content = randomBytes(4 * CHUNK)
    const path = join(tmp.dir, `f${n++}`)
    const first = (await StagedFile.open(path, content.byteLength, new AlignedSlots(1, CHUNK))).file
    await first.write(CHUNK, [content.subarray(CHUNK, 2 * CHUNK)], CHUNK)
    const back = new Uint8Array(CHUNK)
    expect(await first.readInto(back, CHUNK, CHUNK)).toBe(CHUNK)
    expect(Buffer.from(back).equals(content.subarray(CHUNK, 2 * CHUNK))).toBe(true)
    await first.close()

    const { file: again, resumable } = await StagedFile.open(path, content.byteLength, new AlignedSlots(1, CHUNK))
    expect(resumable).toBe(true)
    const kept = new Uint8Array(CHUNK)
    await again.readInto(kept, CHUNK, CHUNK)
    expect(Buffer.from(kept).equals(content.subarray(CHUNK, 2 * CHUNK))).toBe(true)
    await again.close()
  })

  it('flushes in the background while writing more than 32 MiB, and the result is intact', async () => {
    const content = randomBytes(40 * CHUNK)
    const path = join(tmp.dir, `f${n++}`)
    const { file } = await StagedFile.open(path, content.byteLength, new AlignedSlots(4, CHUNK))
    for (let offset = 0; offset < content.byteLength; offset += CHUNK) await file.write(offset, [content.subarray(offset, offset + CHUNK)], CHUNK)
    expect(file.backgroundFlushes).toBe(1)
    await file.sync()
    await file.close()
    expect((await readFile(path)).equals(content)).toBe(true)
  })
})
