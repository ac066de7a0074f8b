import { createHash, randomUUID } from 'node:crypto'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { database, type Database } from '../../node/db/index.ts'
import { defaultCacheDir } from '../../node/config/index.ts'
import { storageService, type StorageInit, type StorageScope, type StorageService } from '../../node/storage/index.ts'
import type { PutOptions } from '../../node/storage/object-store.ts'
import { tempDir } from '../helpers/mesh.ts'
import { refusalOf } from '../helpers/refusal.ts'

/**
 * The storage service on a real embedded database (PGlite, restored from the cached template that
 * test/global-setup.ts builds) and real backends in a temp dir: what the spawned-node tests in
 * test/integration/storage.test.ts reach only through HTTP.
 */

const log = pino({ level: 'silent' })
const admin: StorageScope = { tenant: { role: 'admin', namespace: 'ns' }, namespace: 'ns' }
const writer: StorageScope = { tenant: { role: 'writer', namespace: 'ns' }, namespace: 'ns' }
const reader: StorageScope = { tenant: { role: 'reader', namespace: 'ns' }, namespace: 'ns' }
const stranger: StorageScope = { tenant: { role: 'admin', namespace: 'other' }, namespace: 'other' }

const plain = (expected: PutOptions['expected'] = { checksums: {} }): PutOptions => ({ contentType: 'application/octet-stream', metadata: {}, expected, algorithms: [] })

async function * bodyOf (...chunks: Array<string | Uint8Array>): AsyncGenerator<Uint8Array> {
  for (const chunk of chunks) yield typeof chunk === 'string' ? Buffer.from(chunk) : chunk
}

async function bytesOf (source: AsyncIterable<Uint8Array>): Promise<string> {
  const parts: Uint8Array[] = []
  for await (const part of source) parts.push(part)
  return Buffer.concat(parts).toString()
}

async function readObject (storage: StorageService, scope: StorageScope, bucket: string, key: string, range?: { start: number, end: number }): Promise<string> {
  return await bytesOf(storage.objects.read(await storage.objects.getObject(scope, bucket, key), range))
}

/** finished blobs and half-written files of the disk backend */
async function diskFiles (dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'blobs')).catch(() => [] as string[])).sort()
}

/** the blockstore's block files (blockstore-fs shards them into subdirectories) */
async function blockFiles (dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'blocks'), { recursive: true }).catch(() => [] as string[])).filter((name) => name.endsWith('.data')).sort()
}

describe('storage service on a real database', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: Database
  const started: StorageService[] = []

  async function service (name: string, init: Omit<StorageInit, 'dir'> = {}): Promise<{ storage: StorageService, dir: string }> {
    const dir = join(tmp.dir, name)
    const storage = storageService({ dir, ...init })({ db, secret: 'test-secret', log })
    await storage.start()
    started.push(storage)
    return { storage, dir }
  }

  beforeAll(async () => {
    tmp = await tempDir()
    db = database({ dir: join(tmp.dir, 'db'), templateDir: defaultCacheDir() })({ log })
    await db.open()
  }, 60_000)

  afterAll(async () => {
    for (const storage of started) await storage.stop()
    await db?.stop()
    await tmp?.remove()
  })

  describe('disk backend', () => {
    let storage: StorageService
    let dir: string

    beforeAll(async () => {
      // two rows per query, so listings below cross several batches
      ({ storage, dir } = await service('disk', { backend: 'disk', listBatchRows: 2, minPartBytes: 4, maxObjectBytes: 32 }))
      await storage.objects.createBucket(admin, 'files')
    })

    it('puts, gets (whole and ranged) and replaces an object; the replaced blob is removed', async () => {
      const meta = await storage.objects.putObject(writer, 'files', 'hello.txt', bodyOf('hello ', 'world'),
        { ...plain(), contentType: 'text/plain', metadata: { colour: 'blue' }, algorithms: ['crc32c'] })
      expect(meta).toMatchObject({ bucket: 'files', key: 'hello.txt', size: 11, etag: createHash('md5').update('hello world').digest('hex'), contentType: 'text/plain' })
      expect(meta.checksums.crc32c).toMatch(/^[A-Za-z0-9+/]+=*$/)
      const got = await storage.objects.getObject(reader, 'files', 'hello.txt')
      expect(got).toMatchObject({ size: 11, contentType: 'text/plain', metadata: { colour: 'blue' }, checksums: { crc32c: meta.checksums.crc32c } })
      expect(await readObject(storage, reader, 'files', 'hello.txt')).toBe('hello world')
      expect(await readObject(storage, reader, 'files', 'hello.txt', { start: 6, end: 10 })).toBe('world')
      const before = await diskFiles(dir)
      await storage.objects.putObject(writer, 'files', 'hello.txt', bodyOf('bye'), plain())
      expect(await readObject(storage, reader, 'files', 'hello.txt')).toBe('bye')
      // one blob out, one in: the old bytes are gone
      const after = await diskFiles(dir)
      expect(after.length).toBe(before.length)
      expect(after.filter((name) => !before.includes(name)).length).toBe(1)
      // another namespace does not see the bucket at all
      expect(await refusalOf(storage.objects.getObject(stranger, 'files', 'hello.txt'))).toEqual({ code: 'NoSuchBucket', status: 404 })
    })

    it('lists with a prefix, a delimiter and continuation', async () => {
      await storage.objects.createBucket(admin, 'tree')
      for (const key of ['a/1', 'a/2', 'b', 'c/x/1', 'c/x/2', 'c/y', 'd', 'e']) await storage.objects.putObject(writer, 'tree', key, bodyOf(key), plain())
      const keys = (page: { objects: Array<{ key: string }> }): string[] => page.objects.map((object) => object.key)

      const top = await storage.objects.list(reader, 'tree', { prefix: '', delimiter: '/', maxKeys: 1000 })
      expect({ keys: keys(top), prefixes: top.prefixes, truncated: top.truncated }).toEqual({ keys: ['b', 'd', 'e'], prefixes: ['a/', 'c/'], truncated: false })

      const underC = await storage.objects.list(reader, 'tree', { prefix: 'c/', delimiter: '/', maxKeys: 1000 })
      expect({ keys: keys(underC), prefixes: underC.prefixes }).toEqual({ keys: ['c/y'], prefixes: ['c/x/'] })

      const flat = await storage.objects.list(reader, 'tree', { prefix: 'c/', maxKeys: 1000 })
      expect(keys(flat)).toEqual(['c/x/1', 'c/x/2', 'c/y'])

      // pages of two, each continuing after the last key or prefix of the one before
      const pages: Array<{ entries: string[], truncated: boolean }> = []
      let after: string | undefined
      for (;;) {
        const page = await storage.objects.list(reader, 'tree', { prefix: '', delimiter: '/', maxKeys: 2, after })
        pages.push({ entries: [...page.prefixes, ...keys(page)].sort(), truncated: page.truncated })
        if (!page.truncated) break
        after = page.last!
      }
      expect(pages).toEqual([
        { entries: ['a/', 'b'], truncated: true },
        { entries: ['c/', 'd'], truncated: true },
        { entries: ['e'], truncated: false }
      ])
    })

    it('a reader may not write or delete, and its body is never read', async () => {
      let read = false
      async function * body (): AsyncGenerator<Uint8Array> {
        read = true
        yield Buffer.from('x')
      }
      expect(await refusalOf(storage.objects.putObject(reader, 'files', 'r.txt', body(), plain()))).toEqual({ code: 'AccessDenied', status: 403 })
      expect(read).toBe(false)
      expect(await refusalOf(storage.objects.deleteObject(reader, 'files', 'hello.txt'))).toEqual({ code: 'AccessDenied', status: 403 })
      expect(await refusalOf(storage.objects.createUpload(reader, 'files', 'r.txt', 'text/plain', {}))).toEqual({ code: 'AccessDenied', status: 403 })
      expect(await refusalOf(storage.objects.getObject(reader, 'files', 'r.txt'))).toEqual({ code: 'NoSuchKey', status: 404 })
      expect(await readObject(storage, reader, 'files', 'hello.txt')).toBe('bye')
    })

    it('a digest mismatch or an oversized body leaves no object and no blob behind', async () => {
      const before = await diskFiles(dir)
      const wrongSha = await refusalOf(storage.objects.putObject(writer, 'files', 'bad.txt', bodyOf('payload'), plain({ sha256Hex: '0'.repeat(64), checksums: {} })))
      expect(wrongSha).toEqual({ code: 'XAmzContentSHA256Mismatch', status: 400 })
      const wrongMd5 = await refusalOf(storage.objects.putObject(writer, 'files', 'bad.txt', bodyOf('payload'), plain({ md5Base64: createHash('md5').update('other').digest('base64'), checksums: {} })))
      expect(wrongMd5).toEqual({ code: 'BadDigest', status: 400 })
      const wrongCrc = await refusalOf(storage.objects.putObject(writer, 'files', 'bad.txt', bodyOf('payload'), { ...plain({ checksums: { crc32: 'AAAAAA==' } }), algorithms: ['crc32'] }))
      expect(wrongCrc).toEqual({ code: 'BadDigest', status: 400 })
      // maxObjectBytes is 32 here (the Init's override of 5 GiB)
      const tooLarge = await refusalOf(storage.objects.putObject(writer, 'files', 'bad.txt', bodyOf('x'.repeat(20), 'y'.repeat(20)), plain()))
      expect(tooLarge).toEqual({ code: 'EntityTooLarge', status: 400 })
      expect(await refusalOf(storage.objects.getObject(reader, 'files', 'bad.txt'))).toEqual({ code: 'NoSuchKey', status: 404 })
      expect(await diskFiles(dir)).toEqual(before)
      // the right digest is accepted
      const sha256Hex = createHash('sha256').update('payload').digest('hex')
      await storage.objects.putObject(writer, 'files', 'good.txt', bodyOf('payload'), plain({ sha256Hex, checksums: {} }))
      expect(await readObject(storage, reader, 'files', 'good.txt')).toBe('payload')
    })

    it('deleting an object removes its blob', async () => {
      await storage.objects.putObject(writer, 'files', 'gone.txt', bodyOf('soon gone'), plain())
      const before = await diskFiles(dir)
      await storage.objects.deleteObject(writer, 'files', 'gone.txt')
      const after = await diskFiles(dir)
      expect(after.length).toBe(before.length - 1)
      expect(await refusalOf(storage.objects.getObject(reader, 'files', 'gone.txt'))).toEqual({ code: 'NoSuchKey', status: 404 })
    })

    it('multipart: completing joins the listed parts and drops the rest; aborting removes every part', async () => {
      const before = await diskFiles(dir)
      const id = await storage.objects.createUpload(writer, 'files', 'big.bin', 'application/x-big', { part: 'yes' })
      const one = await storage.objects.putPart(writer, 'files', 'big.bin', id, 1, bodyOf('first-'), plain())
      const unused = await storage.objects.putPart(writer, 'files', 'big.bin', id, 2, bodyOf('never listed'), plain())
      const three = await storage.objects.putPart(writer, 'files', 'big.bin', id, 3, bodyOf('end'), plain())
      expect((await diskFiles(dir)).length).toBe(before.length + 3)
      // minPartBytes is 4 here: a part of 3 bytes may only be the last
      expect(await refusalOf(storage.objects.completeUpload(writer, 'files', 'big.bin', id, [{ partNumber: 3, etag: three.etag }, { partNumber: 1, etag: one.etag }])))
        .toEqual({ code: 'InvalidPartOrder', status: 400 })
      expect(await refusalOf(storage.objects.completeUpload(writer, 'files', 'big.bin', id, [{ partNumber: 1, etag: 'wrong' }])))
        .toEqual({ code: 'InvalidPart', status: 400 })
      const meta = await storage.objects.completeUpload(writer, 'files', 'big.bin', id, [{ partNumber: 1, etag: `"${one.etag}"` }, { partNumber: 3, etag: three.etag }])
      const md5 = (text: string): Buffer => createHash('md5').update(text).digest()
      expect(meta).toMatchObject({ size: 9, contentType: 'application/x-big', metadata: { part: 'yes' }, etag: `${createHash('md5').update(Buffer.concat([md5('first-'), md5('end')])).digest('hex')}-2` })
      expect(unused.etag).not.toBe(one.etag)
      expect(await readObject(storage, reader, 'files', 'big.bin')).toBe('first-end')
      expect(await readObject(storage, reader, 'files', 'big.bin', { start: 4, end: 7 })).toBe('t-en')
      // the unlisted part's blob went with the upload; the upload is gone
      expect((await diskFiles(dir)).length).toBe(before.length + 2)
      expect(await refusalOf(storage.objects.putPart(writer, 'files', 'big.bin', id, 4, bodyOf('late'), plain()))).toEqual({ code: 'NoSuchUpload', status: 404 })

      const small = await storage.objects.createUpload(writer, 'files', 'small.bin', 'text/plain', {})
      const a = await storage.objects.putPart(writer, 'files', 'small.bin', small, 1, bodyOf('abc'), plain())
      const b = await storage.objects.putPart(writer, 'files', 'small.bin', small, 2, bodyOf('def'), plain())
      expect(await refusalOf(storage.objects.completeUpload(writer, 'files', 'small.bin', small, [{ partNumber: 1, etag: a.etag }, { partNumber: 2, etag: b.etag }])))
        .toEqual({ code: 'EntityTooSmall', status: 400 })
      expect((await diskFiles(dir)).length).toBe(before.length + 4)
      await storage.objects.abortUpload(writer, 'files', 'small.bin', small)
      expect((await diskFiles(dir)).length).toBe(before.length + 2)
      expect(await refusalOf(storage.objects.abortUpload(writer, 'files', 'small.bin', small))).toEqual({ code: 'NoSuchUpload', status: 404 })
      expect(await refusalOf(storage.objects.getObject(reader, 'files', 'small.bin'))).toEqual({ code: 'NoSuchKey', status: 404 })

      // deleting the multipart object removes its part blobs
      await storage.objects.deleteObject(writer, 'files', 'big.bin')
      expect(await diskFiles(dir)).toEqual(before)
    })

    it('a bucket with objects or uploads is not deleted', async () => {
      expect(await refusalOf(storage.objects.deleteBucket(admin, 'files'))).toEqual({ code: 'BucketNotEmpty', status: 409 })
      await storage.objects.createBucket(admin, 'empty')
      await storage.objects.deleteBucket(admin, 'empty')
      expect((await storage.objects.listBuckets(reader)).map((bucket) => bucket.name)).toEqual(['files', 'tree'])
    })
  })

  describe('blocks backend', () => {
    // 16-byte chunks: objects share their leading leaves when their first bytes match
    const shared = 'S'.repeat(16) + 's'.repeat(16)
    const ownA = 'A'.repeat(16) + 'a'.repeat(16)
    const ownB = 'B'.repeat(16) + 'b'.repeat(16)

    it('deleting an object removes only the blocks no other object reaches', async () => {
      const { storage, dir } = await service('blocks', { backend: 'blocks', blockChunkBytes: 16, blocksRecentMs: 1 })
      await storage.objects.createBucket(admin, 'dag')
      await storage.objects.putObject(writer, 'dag', 'a', bodyOf(shared + ownA), plain())
      const onlyA = await blockFiles(dir)
      await storage.objects.putObject(writer, 'dag', 'b', bodyOf(shared + ownB), plain())
      await storage.objects.putObject(writer, 'dag', 'b-copy', bodyOf(shared + ownB), plain())
      const both = await blockFiles(dir)
      // a: 4 leaves + root; b adds its 2 own leaves + root; the copy adds nothing
      expect(onlyA.length).toBe(5)
      expect(both.length).toBe(8)
      await new Promise((resolve) => setTimeout(resolve, 20)) // past the 1 ms recent window

      await storage.objects.deleteObject(writer, 'dag', 'a')
      const afterA = await blockFiles(dir)
      expect(afterA.length).toBe(5)
      // what went were a's own leaves and its root, all blocks a alone had
      const gone = both.filter((name) => !afterA.includes(name))
      expect(gone.length).toBe(3)
      expect(gone.every((name) => onlyA.includes(name))).toBe(true)
      expect(await readObject(storage, reader, 'dag', 'b')).toBe(shared + ownB)

      // the copy still holds every block of b
      await storage.objects.deleteObject(writer, 'dag', 'b')
      expect(await blockFiles(dir)).toEqual(afterA)
      expect(await readObject(storage, reader, 'dag', 'b-copy', { start: 30, end: 33 })).toBe('ssBB')
      await storage.objects.deleteObject(writer, 'dag', 'b-copy')
      expect(await blockFiles(dir)).toEqual([])
    })

    it('blocks written within the recent window are not collected', async () => {
      const { storage, dir } = await service('blocks-recent', { backend: 'blocks', blockChunkBytes: 16 })
      await storage.objects.createBucket(admin, 'fresh')
      await storage.objects.putObject(writer, 'fresh', 'x', bodyOf(ownA + ownB), plain())
      const written = await blockFiles(dir)
      expect(written.length).toBe(5)
      await storage.objects.deleteObject(writer, 'fresh', 'x')
      // its row is gone, its blocks wait (the default window is ten minutes)
      expect(await refusalOf(storage.objects.getObject(reader, 'fresh', 'x'))).toEqual({ code: 'NoSuchKey', status: 404 })
      expect(await blockFiles(dir)).toEqual(written)
    })

    it('objects written to the disk backend stay readable after the node switched to blocks', async () => {
      const dir = join(tmp.dir, 'switch')
      const disk = storageService({ dir, backend: 'disk' })({ db, secret: 'test-secret', log })
      await disk.start()
      await disk.objects.createBucket(admin, 'switch')
      await disk.objects.putObject(writer, 'switch', 'old', bodyOf('on disk'), plain())
      await disk.stop()
      const { storage } = await service('switch', { backend: 'blocks' })
      await storage.objects.putObject(writer, 'switch', 'new', bodyOf('in blocks'), plain())
      expect(await readObject(storage, reader, 'switch', 'old')).toBe('on disk')
      expect(await readObject(storage, reader, 'switch', 'new')).toBe('in blocks')
      expect((await storage.objects.getObject(reader, 'switch', 'new')).backend).toBe('blocks')
      await storage.objects.deleteObject(writer, 'switch', 'old')
      expect(await diskFiles(dir)).toEqual([])
    })
  })

  describe('start', () => {
    it('sweeps half-written files a crash left (disk and the S3 spool), and keeps finished blobs', async () => {
      const dir = join(tmp.dir, 'crashed')
      const first = storageService({ dir })({ db, secret: 'test-secret', log })
      await first.start()
      await first.objects.createBucket(admin, 'crash')
      await first.objects.putObject(writer, 'crash', 'kept', bodyOf('kept'), plain())
      await first.stop()
      const finished = await diskFiles(dir)
      expect(finished.length).toBe(1)
      await writeFile(join(dir, 'blobs', `.${randomUUID()}.tmp`), 'half')
      await writeFile(join(dir, 'blobs', `.${randomUUID()}.tmp`), 'half')
      await mkdir(join(dir, 'spool'), { recursive: true })
      await writeFile(join(dir, 'spool', `.${randomUUID()}.tmp`), 'half')
      await writeFile(join(dir, 'spool', 'not-ours'), 'x')

      const infos: Array<Record<string, unknown>> = []
      const watched = { ...log, info: (fields: Record<string, unknown>) => { infos.push(fields) }, warn: log.warn.bind(log) }
      // an S3 backend that is configured but not chosen: start() loads it (the SDK) and sweeps its spool; nothing is sent
      const again = storageService({
        dir,
        backend: 'disk',
        s3: { endpoint: 'http://127.0.0.1:9', region: 'us-east-1', bucket: 'nowhere', accessKeyId: 'k', secretAccessKey: 's', prefix: '', forcePathStyle: true }
      })({ db, secret: 'test-secret', log: watched })
      await again.start()
      expect(await diskFiles(dir)).toEqual(finished)
      expect((await readdir(join(dir, 'spool'))).sort()).toEqual(['not-ours'])
      expect(infos).toEqual([{ removed: 3 }])
      expect(await readObject(again, reader, 'crash', 'kept')).toBe('kept')
      await again.stop()
    })

    it('the s3 backend needs its settings', () => {
      expect(() => storageService({ dir: join(tmp.dir, 'nos3'), backend: 's3' })({ db, secret: 'test-secret', log })).toThrow(/s3 settings/)
    })
  })

  it('issues S3 credentials it can resolve again, bound to namespace and role', async () => {
    const { storage } = await service('keys')
    const keys = storage.credentials('ns', 'writer')
    const resolved = storage.resolveAccessKey(keys.accessKeyId)
    expect(resolved?.secretAccessKey).toBe(keys.secretAccessKey)
    expect(resolved?.principal).toMatchObject({ namespace: 'ns', role: 'writer' })
    const other = storageService({ dir: join(tmp.dir, 'keys2') })({ db, secret: 'another-secret', log })
    expect(other.resolveAccessKey(keys.accessKeyId)?.secretAccessKey).not.toBe(keys.secretAccessKey)
  })
})
