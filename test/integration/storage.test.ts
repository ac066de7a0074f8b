import { createHash, randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { crc32 as zlibCrc32 } from 'node:zlib'
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateBucketCommand, CreateMultipartUploadCommand, DeleteObjectCommand,
  GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException, UploadPartCommand
} from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBkgOk } from '../helpers/cli.ts'
import { createToken } from '../helpers/events.ts'
import { tempDir, TestMesh, type TestNode } from '../helpers/mesh.ts'

interface Keys { accessKeyId: string, secretAccessKey: string }

function credentials (node: TestNode, namespace: string, role: string): Keys {
  return JSON.parse(runBkgOk(['storage', 'credentials', '--data', node.paths.dir, '--namespace', namespace, '--role', role], node.paths.dir).stdout.trim().split('\n').at(-1)!)
}

function client (node: TestNode, keys: Keys, region = 'eu-central-1'): S3Client {
  return new S3Client({ endpoint: `${node.url}/s3`, region, forcePathStyle: true, credentials: keys })
}

async function s3Error (promise: Promise<unknown>): Promise<{ name: string, status: number | undefined }> {
  try {
    await promise
  } catch (err) {
    if (err instanceof S3ServiceException) return { name: err.name, status: err.$metadata.httpStatusCode }
    throw err
  }
  throw new Error('expected the S3 call to fail')
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

describe('object storage through the S3 API, used by the official AWS SDK', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let a: TestNode
  let viaBlocks: TestNode
  let viaS3: TestNode
  let admin: S3Client
  let writer: S3Client

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    a = await mesh.addNode('a', { roles: ['bootstrap', 'member'], namespaces: ['lab', 'ops'] })
    await a.start()
    admin = client(a, credentials(a, 'lab', 'admin'))
    writer = client(a, credentials(a, 'lab', 'writer'))
    await admin.send(new CreateBucketCommand({ Bucket: 'models' }))
    // B keeps object bytes in its blockstore; C keeps them in A's S3 endpoint
    viaBlocks = await mesh.addNode('blocks', { namespaces: ['lab'] })
    await writeFile(viaBlocks.paths.config, JSON.stringify({ storage: { backend: 'blocks' } }))
    await admin.send(new CreateBucketCommand({ Bucket: 'remote' }))
    viaS3 = await mesh.addNode('s3', { namespaces: ['lab'] })
    await writeFile(viaS3.paths.config, JSON.stringify({ storage: { backend: 's3', s3: { endpoint: `${a.url}/s3`, bucket: 'remote', prefix: 'c/', ...credentials(a, 'lab', 'writer') } } }))
    await Promise.all([viaBlocks.start(), viaS3.start()])
  }, 120_000)

  afterAll(async () => {
    admin?.destroy()
    writer?.destroy()
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('round-trips objects: put with metadata and checksums, get, head, range, delete', async () => {
    const body = randomBytes(300_000)
    const put = await writer.send(new PutObjectCommand({ Bucket: 'models', Key: 'dir/weights v1+(a).bin', Body: body, ContentType: 'application/x-test', Metadata: { owner: 'ada' } }))
    expect(put.ETag).toBe(`"${createHash('md5').update(body).digest('hex')}"`)
    const got = await writer.send(new GetObjectCommand({ Bucket: 'models', Key: 'dir/weights v1+(a).bin' }))
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(body))
    expect(got.ContentType).toBe('application/x-test')
    expect(got.Metadata).toEqual({ owner: 'ada' })
    const head = await writer.send(new HeadObjectCommand({ Bucket: 'models', Key: 'dir/weights v1+(a).bin' }))
    expect(head.ContentLength).toBe(body.length)
    const range = await writer.send(new GetObjectCommand({ Bucket: 'models', Key: 'dir/weights v1+(a).bin', Range: 'bytes=1000-1999' }))
    expect(Buffer.from(await range.Body!.transformToByteArray())).toEqual(body.subarray(1000, 2000))
    await writer.send(new DeleteObjectCommand({ Bucket: 'models', Key: 'dir/weights v1+(a).bin' }))
    expect(await s3Error(writer.send(new GetObjectCommand({ Bucket: 'models', Key: 'dir/weights v1+(a).bin' })))).toMatchObject({ name: 'NoSuchKey', status: 404 })
  })

  it('streams aws-chunked bodies with checksum trailers, and refuses a wrong checksum', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 5)
    // a stream body: the SDK sends it aws-chunked with an x-amz-checksum-crc32 trailer
    await writer.send(new PutObjectCommand({ Bucket: 'models', Key: 'streamed.bin', Body: Readable.from([body.subarray(0, 1_000_000), body.subarray(1_000_000)]), ContentLength: body.length }))
    const got = await writer.send(new GetObjectCommand({ Bucket: 'models', Key: 'streamed.bin', ChecksumMode: 'ENABLED' }))
    expect(got.ChecksumCRC32).toBe(Buffer.from(zlibCrc32(body).toString(16).padStart(8, '0'), 'hex').toString('base64'))
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(body))
    expect(await s3Error(writer.send(new PutObjectCommand({ Bucket: 'models', Key: 'bad.bin', Body: 'payload', ChecksumCRC32: 'AAAAAA==' })))).toMatchObject({ name: 'BadDigest', status: 400 })
    expect(await s3Error(writer.send(new HeadObjectCommand({ Bucket: 'models', Key: 'bad.bin' })))).toMatchObject({ status: 404 })
  })

  it('lists with prefix, delimiter and continuation', async () => {
    for (const key of ['l/a.txt', 'l/b.txt', 'l/sub/c.txt', 'l/sub/d.txt', 'l/z.txt']) await writer.send(new PutObjectCommand({ Bucket: 'models', Key: key, Body: key }))
    const rolled = await writer.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'l/', Delimiter: '/' }))
    expect(rolled.Contents?.map((o) => o.Key)).toEqual(['l/a.txt', 'l/b.txt', 'l/z.txt'])
    expect(rolled.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['l/sub/'])
    const keys: string[] = []
    let token: string | undefined
    do {
      const page = await writer.send(new ListObjectsV2Command({ Bucket: 'models', Prefix: 'l/', MaxKeys: 2, ContinuationToken: token }))
      keys.push(...(page.Contents ?? []).map((o) => o.Key!))
      token = page.NextContinuationToken
      if (token != null) expect(page.IsTruncated).toBe(true)
    } while (token != null)
    expect(keys).toEqual(['l/a.txt', 'l/b.txt', 'l/sub/c.txt', 'l/sub/d.txt', 'l/z.txt'])
  })

  it('multipart upload: parts assemble into one object; an aborted upload leaves nothing', async () => {
    const parts = [randomBytes(5 * 1024 * 1024), randomBytes(5 * 1024 * 1024), randomBytes(1234)]
    const { UploadId } = await writer.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'big.bin' }))
    const done = []
    for (const [i, part] of parts.entries()) {
      const { ETag } = await writer.send(new UploadPartCommand({ Bucket: 'models', Key: 'big.bin', UploadId, PartNumber: i + 1, Body: part }))
      done.push({ PartNumber: i + 1, ETag })
    }
    const completed = await writer.send(new CompleteMultipartUploadCommand({ Bucket: 'models', Key: 'big.bin', UploadId, MultipartUpload: { Parts: done } }))
    expect(completed.ETag).toMatch(/-3"$/)
    const got = await writer.send(new GetObjectCommand({ Bucket: 'models', Key: 'big.bin' }))
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(Buffer.concat(parts)))
    const across = await writer.send(new GetObjectCommand({ Bucket: 'models', Key: 'big.bin', Range: `bytes=${5 * 1024 * 1024 - 10}-${5 * 1024 * 1024 + 9}` }))
    expect(Buffer.from(await across.Body!.transformToByteArray())).toEqual(Buffer.concat(parts).subarray(5 * 1024 * 1024 - 10, 5 * 1024 * 1024 + 10))
    const aborted = await writer.send(new CreateMultipartUploadCommand({ Bucket: 'models', Key: 'gone.bin' }))
    await writer.send(new UploadPartCommand({ Bucket: 'models', Key: 'gone.bin', UploadId: aborted.UploadId, PartNumber: 1, Body: 'x' }))
    await writer.send(new AbortMultipartUploadCommand({ Bucket: 'models', Key: 'gone.bin', UploadId: aborted.UploadId }))
    expect(await s3Error(writer.send(new UploadPartCommand({ Bucket: 'models', Key: 'gone.bin', UploadId: aborted.UploadId, PartNumber: 2, Body: 'y' })))).toMatchObject({ name: 'NoSuchUpload' })
  })

  it('refuses bad signatures, unknown keys, other namespaces and writes by readers', async () => {
    const keys = credentials(a, 'lab', 'writer')
    const forged = client(a, { accessKeyId: keys.accessKeyId, secretAccessKey: keys.secretAccessKey.replace(/^./, (c) => c === 'A' ? 'B' : 'A') })
    expect(await s3Error(forged.send(new GetObjectCommand({ Bucket: 'models', Key: 'l/a.txt' })))).toMatchObject({ name: 'SignatureDoesNotMatch', status: 403 })
    const unknown = client(a, { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: keys.secretAccessKey })
    expect(await s3Error(unknown.send(new GetObjectCommand({ Bucket: 'models', Key: 'l/a.txt' })))).toMatchObject({ name: 'InvalidAccessKeyId', status: 403 })
    const ops = client(a, credentials(a, 'ops', 'admin'))
    expect(await s3Error(ops.send(new GetObjectCommand({ Bucket: 'models', Key: 'l/a.txt' })))).toMatchObject({ name: 'NoSuchBucket', status: 404 })
    expect(await s3Error(ops.send(new PutObjectCommand({ Bucket: 'models', Key: 'x', Body: 'x' })))).toMatchObject({ name: 'NoSuchBucket' })
    expect(await s3Error(ops.send(new DeleteObjectCommand({ Bucket: 'models', Key: 'l/a.txt' })))).toMatchObject({ name: 'NoSuchBucket' })
    const reader = client(a, credentials(a, 'lab', 'reader'))
    expect(await s3Error(reader.send(new PutObjectCommand({ Bucket: 'models', Key: 'x', Body: 'x' })))).toMatchObject({ name: 'AccessDenied', status: 403 })
    expect(await s3Error(writer.send(new CreateBucketCommand({ Bucket: 'nope' })))).toMatchObject({ name: 'AccessDenied' })
    // the object is still there for its own namespace
    const still = await reader.send(new GetObjectCommand({ Bucket: 'models', Key: 'l/a.txt' }))
    expect(await still.Body!.transformToString()).toBe('l/a.txt')
    for (const c of [forged, unknown, ops, reader]) c.destroy()
  })

  it('presigned URLs work with plain HTTP, and expire', async () => {
    const url = await getSignedUrl(writer, new GetObjectCommand({ Bucket: 'models', Key: 'l/b.txt' }), { expiresIn: 60 })
    const response = await fetch(url)
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('l/b.txt')
    const tampered = await fetch(url.replace('l/b.txt', 'l/a.txt'))
    expect(tampered.status).toBe(403)
    expect(await tampered.text()).toContain('<Code>SignatureDoesNotMatch</Code>')
    const put = await getSignedUrl(writer, new PutObjectCommand({ Bucket: 'models', Key: 'presigned.txt' }), { expiresIn: 60 })
    expect((await fetch(put, { method: 'PUT', body: 'via url' })).status).toBe(200)
    expect(await (await writer.send(new GetObjectCommand({ Bucket: 'models', Key: 'presigned.txt' }))).Body!.transformToString()).toBe('via url')
  })

  it('the blockstore backend and the external S3 backend (another node\'s /s3) keep bytes intact', async () => {
    for (const node of [viaBlocks, viaS3]) {
      const own = client(node, credentials(node, 'lab', 'admin'))
      await own.send(new CreateBucketCommand({ Bucket: 'data' }))
      const body = randomBytes(2 * 1024 * 1024 + 17)
      await own.send(new PutObjectCommand({ Bucket: 'data', Key: 'blob', Body: body }))
      await own.send(new PutObjectCommand({ Bucket: 'data', Key: 'copy', Body: body }))
      const got = await own.send(new GetObjectCommand({ Bucket: 'data', Key: 'blob' }))
      expect(sha256(await got.Body!.transformToByteArray()), node.name).toBe(sha256(body))
      const part = await own.send(new GetObjectCommand({ Bucket: 'data', Key: 'copy', Range: 'bytes=1048570-1048585' }))
      expect(Buffer.from(await part.Body!.transformToByteArray())).toEqual(body.subarray(1048570, 1048586))
      // removing one of two identical objects must not take the other's bytes
      await own.send(new DeleteObjectCommand({ Bucket: 'data', Key: 'blob' }))
      const left = await own.send(new GetObjectCommand({ Bucket: 'data', Key: 'copy' }))
      expect(sha256(await left.Body!.transformToByteArray()), node.name).toBe(sha256(body))
      own.destroy()
    }
    // C's bytes really are in A's bucket
    const remote = await writer.send(new ListObjectsV2Command({ Bucket: 'remote', Prefix: 'c/' }))
    expect(remote.KeyCount).toBe(1)
  })

  it('REST /api/v1/storage: tokens see only their namespace', async () => {
    const token = (namespace: string, role: 'reader' | 'writer' | 'admin'): string => createToken(a, namespace, role)
    const lab = token('lab', 'writer')
    const put = await fetch(`${a.url}/api/v1/storage/objects/models/rest/notes.txt`, { method: 'PUT', headers: { authorization: `Bearer ${lab}`, 'content-type': 'text/plain' }, body: 'hello' })
    expect(put.status).toBe(200)
    expect(await put.json()).toMatchObject({ bucket: 'models', key: 'rest/notes.txt', size: 5, contentType: 'text/plain' })
    const got = await fetch(`${a.url}/api/v1/storage/objects/models/rest/notes.txt`, { headers: { authorization: `Bearer ${lab}` } })
    expect(await got.text()).toBe('hello')
    const listed = await a.api('GET', '/api/v1/storage/buckets/models/objects?prefix=rest/', undefined, lab)
    expect(listed.body.objects.map((o: { key: string }) => o.key)).toEqual(['rest/notes.txt'])
    const badDigest = await fetch(`${a.url}/api/v1/storage/objects/models/rest/x`, { method: 'PUT', headers: { authorization: `Bearer ${lab}`, 'x-checksum-sha256': '0'.repeat(64) }, body: 'x' })
    expect(badDigest.status).toBe(400)
    expect(((await badDigest.json()) as any).error.code).toBe('XAmzContentSHA256Mismatch')
    const ops = token('ops', 'admin')
    const foreign = await fetch(`${a.url}/api/v1/storage/objects/models/rest/notes.txt`, { headers: { authorization: `Bearer ${ops}` } })
    expect(foreign.status).toBe(404)
    expect(((await foreign.json()) as any).error.code).toBe('NoSuchBucket')
    expect((await a.api('GET', '/api/v1/storage/buckets?namespace=lab', undefined, ops)).status).toBe(403)
    const reader = await fetch(`${a.url}/api/v1/storage/objects/models/rest/notes.txt`, { method: 'DELETE', headers: { authorization: `Bearer ${token('lab', 'reader')}` } })
    expect(reader.status).toBe(403)
    expect((await a.api('GET', '/api/v1/storage/buckets')).status).toBe(400)
    expect((await a.api('GET', '/api/v1/storage/buckets?namespace=lab')).body.buckets.map((b: { name: string }) => b.name)).toEqual(['models', 'remote'])
  })
})
