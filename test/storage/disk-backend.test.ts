import { randomUUID } from 'node:crypto'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DiskBackend } from '../../node/storage/backends/disk-backend.ts'
import { tempDir } from '../helpers/mesh.ts'

describe('disk backend', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  beforeAll(async () => { tmp = await tempDir() })
  afterAll(async () => { await tmp?.remove() })

  it('writes, reads ranges, removes; a crash\'s half-written files are swept, finished blobs are not', async () => {
    const disk = new DiskBackend(join(tmp.dir, 'blobs'))
    const { locator, size } = await disk.write(Readable.from([Buffer.from('hello '), Buffer.from('world')]))
    expect(size).toBe(11)
    const chunks: Buffer[] = []
    for await (const chunk of disk.read(locator, { start: 6, end: 10 })) chunks.push(chunk as Buffer)
    expect(Buffer.concat(chunks).toString()).toBe('world')
    await writeFile(join(tmp.dir, 'blobs', `.${randomUUID()}.tmp`), 'partial')
    expect(await disk.removeUnfinished()).toBe(1)
    expect(await readdir(join(tmp.dir, 'blobs'))).toEqual([String(locator.file)])
    await disk.remove(locator)
    expect(await readdir(join(tmp.dir, 'blobs'))).toEqual([])
    await expect(async () => { for await (const _ of disk.read({ file: '../../etc/passwd' })) { /* never */ } }).rejects.toThrow(/not a disk locator/)
  })
})
