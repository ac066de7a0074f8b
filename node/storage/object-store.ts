import { createHash, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Database, Tenant, Transaction } from '../db/index.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import type { BlobBackend, ByteRange, Locator } from './backends/blob-backend.ts'
import { createChecksum, type Checksum, type ChecksumAlgorithm } from './checksums.ts'
import { unstorableReason } from '../../protocols/untrusted-json.ts'
import { BUCKET_NAME, DEFAULT_LIST_BATCH_ROWS, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_MIN_PART_BYTES, MAX_KEY_BYTES, MAX_PART_NUMBER } from './constants.ts'

/** Refusals named as S3 names them (`code`), with their HTTP status. */
export class StorageError extends BkgError {}

/** Who acts and in which namespace: a tenant (token or S3 key) or the node admin (tenant null). */
export interface StorageScope {
  tenant: Tenant | null
  namespace: string
}

export interface ObjectMeta {
  bucket: string
  key: string
  size: number
  etag: string
  contentType: string
  metadata: Record<string, string>
  checksums: Partial<Record<ChecksumAlgorithm, string>>
  updatedAt: string
}

export interface PutOptions {
  contentType: string
  metadata: Record<string, string>
  /** digests the client sent: the bytes must match them */
  expected: { md5Base64?: string, sha256Hex?: string, checksums: Partial<Record<ChecksumAlgorithm, string>> }
  /** checksums to compute and keep (those the client sent, or asked for) */
  algorithms: ChecksumAlgorithm[]
  /** checksums that arrive after the body (aws-chunked trailers); read once the body is consumed */
  trailers?: () => Partial<Record<ChecksumAlgorithm, string>>
}

export interface ListOptions {
  prefix: string
  delimiter?: string
  /** list keys after this one (StartAfter or a continuation token) */
  after?: string
  maxKeys: number
}

export interface ObjectStoreInit {
  /** where new bytes go */
  backend: BlobBackend
  /** backends objects written earlier may still be in (they are read and removed, never written) */
  others: BlobBackend[]
  /** the largest object or part one request may write */
  maxObjectBytes?: number
  /** the smallest a multipart upload's part may be, but the last */
  minPartBytes?: number
  /** rows a listing reads per query */
  listBatchRows?: number
}

export interface ObjectStoreComponents {
  /** every statement runs as the caller's tenant role (RLS), or as the node for the blocks collector */
  db: Pick<Database, 'asNode' | 'asTenant'>
  log: Pick<Logger, 'warn'>
}

interface Row {
  bucket: string
  key: string
  size: string | number
  etag: string
  content_type: string
  metadata: Record<string, string>
  checksums: Partial<Record<ChecksumAlgorithm, string>>
  backend: string
  locator: StoredLocator
  updated_at: Date | string
}

/** one blob, or the parts of a multipart upload in order */
type StoredLocator = Locator | { parts: Array<{ backend: string, locator: Locator, size: number }> }

/**
 * Buckets and objects: metadata in the embedded database (every statement as the caller's
 * tenant role, so RLS confines it to its namespace), bytes in a blob backend. An object's bytes
 * are written and checked against every digest the client sent before its row is committed; a
 * replaced or deleted object's bytes are removed after the commit.
 */
export class ObjectStore {
  private readonly db: ObjectStoreComponents['db']
  private readonly log: ObjectStoreComponents['log']
  private readonly backend: BlobBackend
  private readonly backends: Map<string, BlobBackend>
  private readonly maxObjectBytes: number
  private readonly minPartBytes: number
  private readonly listBatchRows: number

  constructor (components: ObjectStoreComponents, init: ObjectStoreInit) {
    this.db = components.db
    this.log = components.log
    this.backend = init.backend
    this.backends = new Map([...init.others, init.backend].map((b) => [b.name, b]))
    this.maxObjectBytes = init.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES
    this.minPartBytes = init.minPartBytes ?? DEFAULT_MIN_PART_BYTES
    this.listBatchRows = init.listBatchRows ?? DEFAULT_LIST_BATCH_ROWS
  }

  async createBucket (scope: StorageScope, name: string): Promise<void> {
    if (!BUCKET_NAME.test(name)) throw new StorageError('InvalidBucketName', 400, 'bucket names are 3-63 of a-z 0-9 . -, starting and ending with a letter or digit')
    await this.run(scope, async (tx) => {
      await tx.query('INSERT INTO bkg.buckets (namespace, name) VALUES ($1, $2)', [scope.namespace, name])
    })
  }

  async listBuckets (scope: StorageScope): Promise<Array<{ name: string, createdAt: string }>> {
    return await this.run(scope, async (tx) => (await tx.query<{ name: string, created_at: Date }>(
      'SELECT name, created_at FROM bkg.buckets WHERE namespace = $1 ORDER BY name', [scope.namespace])).rows
      .map((row) => ({ name: row.name, createdAt: new Date(row.created_at).toISOString() })))
  }

  async headBucket (scope: StorageScope, name: string): Promise<void> {
    await this.run(scope, async (tx) => { await this.requireBucket(tx, scope, name) })
  }

  async deleteBucket (scope: StorageScope, name: string): Promise<void> {
    await this.run(scope, async (tx) => {
      await this.requireBucket(tx, scope, name)
      const used = await tx.query('SELECT 1 FROM bkg.objects WHERE namespace = $1 AND bucket = $2 UNION ALL SELECT 1 FROM bkg.uploads WHERE namespace = $1 AND bucket = $2 LIMIT 1', [scope.namespace, name])
      if (used.rows.length > 0) throw new StorageError('BucketNotEmpty', 409, `bucket ${name} is not empty (objects or unfinished multipart uploads)`)
      const deleted = await tx.query('DELETE FROM bkg.buckets WHERE namespace = $1 AND name = $2', [scope.namespace, name])
      if (deleted.affectedRows === 0) throw new StorageError('AccessDenied', 403, 'this credential may not delete buckets')
    })
  }

  async putObject (scope: StorageScope, bucket: string, key: string, body: AsyncIterable<Uint8Array>, options: PutOptions): Promise<ObjectMeta> {
    assertWriter(scope)
    assertKey(key)
    // fail before reading the body when the bucket is missing or the credential may not write
    await this.run(scope, async (tx) => { await this.requireBucket(tx, scope, bucket) })
    const stored = await this.receive(body, options)
    try {
      const replaced = await this.run(scope, async (tx) => {
        const old = (await tx.query<Row>('SELECT backend, locator FROM bkg.objects WHERE namespace = $1 AND bucket = $2 AND key = $3 FOR UPDATE', [scope.namespace, bucket, key])).rows[0]
        await tx.query(
          `INSERT INTO bkg.objects (namespace, bucket, key, size, etag, content_type, metadata, checksums, backend, locator)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (namespace, bucket, key) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag, content_type = EXCLUDED.content_type,
             metadata = EXCLUDED.metadata, checksums = EXCLUDED.checksums, backend = EXCLUDED.backend, locator = EXCLUDED.locator, updated_at = now()`,
          [scope.namespace, bucket, key, stored.size, stored.etag, options.contentType, JSON.stringify(options.metadata), JSON.stringify(stored.checksums), this.backend.name, JSON.stringify(stored.locator)])
        return old
      })
      if (replaced != null) await this.discard(replaced.backend, replaced.locator)
    } catch (err) {
      await this.removeBytes(this.backend, stored.locator, 'a failed put')
      throw err
    }
    return { bucket, key, size: stored.size, etag: stored.etag, contentType: options.contentType, metadata: options.metadata, checksums: stored.checksums, updatedAt: new Date().toISOString() }
  }

  async getObject (scope: StorageScope, bucket: string, key: string): Promise<ObjectMeta & { locator: StoredLocator, backend: string }> {
    assertKey(key)
    return await this.run(scope, async (tx) => {
      const row = (await tx.query<Row>('SELECT * FROM bkg.objects WHERE namespace = $1 AND bucket = $2 AND key = $3', [scope.namespace, bucket, key])).rows[0]
      if (row == null) {
        await this.requireBucket(tx, scope, bucket)
        throw new StorageError('NoSuchKey', 404, `no object ${key} in bucket ${bucket}`)
      }
      return { ...toMeta(row), locator: row.locator, backend: row.backend }
    })
  }

  /** The object's bytes (a byte range of them when given). */
  async * read (object: { locator: StoredLocator, backend: string, size: number }, range?: ByteRange): AsyncIterable<Uint8Array> {
    const wanted = range ?? { start: 0, end: object.size - 1 }
    if (object.size === 0) return
    if (object.backend !== 'multipart') {
      yield * this.backendOf(object.backend).read(object.locator as Locator, range)
      return
    }
    let offset = 0
    for (const part of (object.locator as { parts: Array<{ backend: string, locator: Locator, size: number }> }).parts) {
      const first = offset
      offset += part.size
      if (offset - 1 < wanted.start || first > wanted.end) continue
      yield * this.backendOf(part.backend).read(part.locator, { start: Math.max(0, wanted.start - first), end: Math.min(part.size - 1, wanted.end - first) })
    }
  }

  async deleteObject (scope: StorageScope, bucket: string, key: string): Promise<void> {
    assertKey(key)
    assertWriter(scope)
    const removed = await this.run(scope, async (tx) => {
      await this.requireBucket(tx, scope, bucket)
      return (await tx.query<Row>('DELETE FROM bkg.objects WHERE namespace = $1 AND bucket = $2 AND key = $3 RETURNING backend, locator', [scope.namespace, bucket, key])).rows[0]
    })
    if (removed != null) await this.discard(removed.backend, removed.locator)
  }

  async list (scope: StorageScope, bucket: string, options: ListOptions): Promise<{ objects: ObjectMeta[], prefixes: string[], truncated: boolean, last: string | null }> {
    assertStorableText('the prefix', options.prefix)
    assertStorableText('the delimiter', options.delimiter)
    assertStorableText('the start key', options.after)
    return await this.run(scope, async (tx) => {
      await this.requireBucket(tx, scope, bucket)
      const objects: ObjectMeta[] = []
      const prefixes: string[] = []
      let after = options.after ?? ''
      let last: string | null = null
      while (objects.length + prefixes.length < options.maxKeys) {
        const rows = (await tx.query<Row>(
          'SELECT * FROM bkg.objects WHERE namespace = $1 AND bucket = $2 AND starts_with(key, $3) AND key > $4 ORDER BY key LIMIT $5',
          [scope.namespace, bucket, options.prefix, after, this.listBatchRows])).rows
        if (rows.length === 0) return { objects, prefixes, truncated: false, last }
        for (const row of rows) {
          if (objects.length + prefixes.length >= options.maxKeys) return { objects, prefixes, truncated: true, last }
          const rest = row.key.slice(options.prefix.length)
          const cut = options.delimiter != null && options.delimiter !== '' ? rest.indexOf(options.delimiter) : -1
          if (cut >= 0) {
            const prefix = options.prefix + rest.slice(0, cut + options.delimiter!.length)
            prefixes.push(prefix)
            // everything under this prefix is rolled up: skip past it
            after = prefix + '\u{10FFFF}'
            last = prefix
            break
          }
          objects.push(toMeta(row))
          after = row.key
          last = row.key
        }
      }
      const more = await tx.query('SELECT 1 FROM bkg.objects WHERE namespace = $1 AND bucket = $2 AND starts_with(key, $3) AND key > $4 LIMIT 1', [scope.namespace, bucket, options.prefix, after])
      return { objects, prefixes, truncated: more.rows.length > 0, last }
    })
  }

  async createUpload (scope: StorageScope, bucket: string, key: string, contentType: string, metadata: Record<string, string>): Promise<string> {
    assertWriter(scope)
    assertKey(key)
    const id = randomBytes(18).toString('base64url')
    await this.run(scope, async (tx) => {
      await this.requireBucket(tx, scope, bucket)
      await tx.query('INSERT INTO bkg.uploads (id, namespace, bucket, key, content_type, metadata) VALUES ($1, $2, $3, $4, $5, $6)', [id, scope.namespace, bucket, key, contentType, JSON.stringify(metadata)])
    })
    return id
  }

  async putPart (scope: StorageScope, bucket: string, key: string, uploadId: string, partNumber: number, body: AsyncIterable<Uint8Array>, options: PutOptions): Promise<{ etag: string, checksums: Partial<Record<ChecksumAlgorithm, string>> }> {
    assertKey(key)
    assertWriter(scope)
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > MAX_PART_NUMBER) throw new StorageError('InvalidArgument', 400, `partNumber must be 1-${MAX_PART_NUMBER}`)
    await this.run(scope, async (tx) => { await this.requireUpload(tx, scope, bucket, key, uploadId) })
    const stored = await this.receive(body, options)
    try {
      const replaced = await this.run(scope, async (tx) => {
        await this.requireUpload(tx, scope, bucket, key, uploadId)
        const old = (await tx.query<Row>('SELECT backend, locator FROM bkg.upload_parts WHERE upload_id = $1 AND part_number = $2 FOR UPDATE', [uploadId, partNumber])).rows[0]
        await tx.query(
          `INSERT INTO bkg.upload_parts (upload_id, namespace, part_number, size, etag, md5, backend, locator) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (upload_id, part_number) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag, md5 = EXCLUDED.md5, backend = EXCLUDED.backend, locator = EXCLUDED.locator`,
          [uploadId, scope.namespace, partNumber, stored.size, stored.etag, stored.md5, this.backend.name, JSON.stringify(stored.locator)])
        return old
      })
      if (replaced != null) await this.discard(replaced.backend, replaced.locator)
    } catch (err) {
      await this.removeBytes(this.backend, stored.locator, 'a failed part upload')
      throw err
    }
    return { etag: stored.etag, checksums: stored.checksums }
  }

  async completeUpload (scope: StorageScope, bucket: string, key: string, uploadId: string, parts: Array<{ partNumber: number, etag: string }>): Promise<ObjectMeta> {
    assertKey(key)
    assertWriter(scope)
    if (parts.length === 0) throw new StorageError('MalformedXML', 400, 'CompleteMultipartUpload needs at least one part')
    for (let i = 1; i < parts.length; i++) {
      if (parts[i].partNumber <= parts[i - 1].partNumber) throw new StorageError('InvalidPartOrder', 400, 'parts must be listed in ascending order of part number')
    }
    const { meta, replaced } = await this.run(scope, async (tx) => {
      const upload = await this.requireUpload(tx, scope, bucket, key, uploadId)
      const stored = new Map((await tx.query<{ part_number: number, size: string, etag: string, md5: string, backend: string, locator: Locator }>(
        'SELECT part_number, size, etag, md5, backend, locator FROM bkg.upload_parts WHERE upload_id = $1', [uploadId])).rows.map((row) => [row.part_number, row]))
      const chosen = parts.map((part, i) => {
        const row = stored.get(part.partNumber)
        if (row == null || row.etag !== unquote(part.etag)) throw new StorageError('InvalidPart', 400, `part ${part.partNumber} was not uploaded or its ETag differs`)
        if (i < parts.length - 1 && Number(row.size) < this.minPartBytes) throw new StorageError('EntityTooSmall', 400, `part ${part.partNumber} is smaller than ${bytesText(this.minPartBytes)} and not the last part`)
        return row
      })
      const size = chosen.reduce((sum, row) => sum + Number(row.size), 0)
      const etag = `${createHash('md5').update(Buffer.concat(chosen.map((row) => Buffer.from(row.md5, 'hex')))).digest('hex')}-${chosen.length}`
      const locator = { parts: chosen.map((row) => ({ backend: row.backend, locator: row.locator, size: Number(row.size) })) }
      const old = (await tx.query<Row>('SELECT backend, locator FROM bkg.objects WHERE namespace = $1 AND bucket = $2 AND key = $3 FOR UPDATE', [scope.namespace, bucket, key])).rows[0]
      await tx.query(
        `INSERT INTO bkg.objects (namespace, bucket, key, size, etag, content_type, metadata, checksums, backend, locator)
         VALUES ($1, $2, $3, $4, $5, $6, $7, '{}', 'multipart', $8)
         ON CONFLICT (namespace, bucket, key) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag, content_type = EXCLUDED.content_type,
           metadata = EXCLUDED.metadata, checksums = EXCLUDED.checksums, backend = EXCLUDED.backend, locator = EXCLUDED.locator, updated_at = now()`,
        [scope.namespace, bucket, key, size, etag, upload.content_type, JSON.stringify(upload.metadata), JSON.stringify(locator)])
      // parts listed stay as the object's bytes; the rest go with the upload
      const unused = [...stored.values()].filter((row) => !parts.some((p) => p.partNumber === row.part_number))
      await tx.query('DELETE FROM bkg.uploads WHERE id = $1', [uploadId])
      return {
        meta: { bucket, key, size, etag, contentType: upload.content_type, metadata: upload.metadata, checksums: {}, updatedAt: new Date().toISOString() },
        replaced: [...(old != null ? [old] : []), ...unused]
      }
    })
    for (const old of replaced) await this.discard(old.backend, old.locator)
    return meta
  }

  async abortUpload (scope: StorageScope, bucket: string, key: string, uploadId: string): Promise<void> {
    assertKey(key)
    assertWriter(scope)
    const parts = await this.run(scope, async (tx) => {
      await this.requireUpload(tx, scope, bucket, key, uploadId)
      const rows = (await tx.query<Row>('SELECT backend, locator FROM bkg.upload_parts WHERE upload_id = $1', [uploadId])).rows
      await tx.query('DELETE FROM bkg.uploads WHERE id = $1', [uploadId])
      return rows
    })
    for (const part of parts) await this.discard(part.backend, part.locator)
  }

  /** Blob locators of every object and part kept in `backend` (for the blocks backend's collector). */
  async locatorsIn (backend: string): Promise<Locator[]> {
    return await this.db.asNode(async (tx) => {
      const objects = (await tx.query<{ backend: string, locator: StoredLocator }>("SELECT backend, locator FROM bkg.objects WHERE backend IN ($1, 'multipart')", [backend])).rows
      const parts = (await tx.query<{ backend: string, locator: Locator }>('SELECT backend, locator FROM bkg.upload_parts WHERE backend = $1', [backend])).rows
      const out: Locator[] = parts.map((row) => row.locator)
      for (const row of objects) {
        if (row.backend === backend) out.push(row.locator as Locator)
        if (row.backend === 'multipart') for (const part of (row.locator as { parts: Array<{ backend: string, locator: Locator }> }).parts) if (part.backend === backend) out.push(part.locator)
      }
      return out
    })
  }

  /** Streams the body into the backend, computing and checking every digest on the way. */
  private async receive (body: AsyncIterable<Uint8Array>, options: PutOptions): Promise<{ locator: Locator, size: number, etag: string, md5: string, checksums: Partial<Record<ChecksumAlgorithm, string>> }> {
    const md5 = createHash('md5')
    const sha256 = createHash('sha256')
    const algorithms = new Set<ChecksumAlgorithm>([...options.algorithms, ...Object.keys(options.expected.checksums) as ChecksumAlgorithm[]])
    const sums = new Map<ChecksumAlgorithm, Checksum>([...algorithms].map((algorithm) => [algorithm, createChecksum(algorithm)]))
    const maxObjectBytes = this.maxObjectBytes
    let size = 0
    async function * tapped (): AsyncGenerator<Uint8Array> {
      for await (const chunk of body) {
        size += chunk.byteLength
        if (size > maxObjectBytes) throw new StorageError('EntityTooLarge', 400, `an object or part is at most ${bytesText(maxObjectBytes)}; use a multipart upload`)
        md5.update(chunk)
        sha256.update(chunk)
        for (const sum of sums.values()) sum.update(chunk)
        yield chunk
      }
    }
    const stored = await this.backend.write(tapped())
    try {
      const md5Hex = md5.digest('hex')
      const sha256Hex = sha256.digest('hex')
      if (options.expected.md5Base64 != null && Buffer.from(md5Hex, 'hex').toString('base64') !== options.expected.md5Base64) {
        throw new StorageError('BadDigest', 400, 'the Content-MD5 you specified did not match what was received')
      }
      if (options.expected.sha256Hex != null && sha256Hex !== options.expected.sha256Hex) {
        throw new StorageError('XAmzContentSHA256Mismatch', 400, 'the provided x-amz-content-sha256 header does not match what was computed')
      }
      const checksums: Partial<Record<ChecksumAlgorithm, string>> = {}
      for (const [algorithm, sum] of sums) checksums[algorithm] = sum.digest()
      const expected = { ...options.expected.checksums, ...options.trailers?.() }
      for (const [algorithm, value] of Object.entries(expected) as Array<[ChecksumAlgorithm, string]>) {
        if (checksums[algorithm] == null) continue
        if (checksums[algorithm] !== value) throw new StorageError('BadDigest', 400, `the ${algorithm.toUpperCase()} you specified did not match the calculated checksum`)
      }
      return { locator: stored.locator, size: stored.size, etag: md5Hex, md5: md5Hex, checksums }
    } catch (err) {
      await this.removeBytes(this.backend, stored.locator, 'an upload that failed its checksums')
      throw err
    }
  }

  private async discard (backend: string, locator: StoredLocator): Promise<void> {
    const blobs = backend === 'multipart'
      ? (locator as { parts: Array<{ backend: string, locator: Locator }> }).parts
      : [{ backend, locator: locator as Locator }]
    for (const blob of blobs) {
      const owner = this.backends.get(blob.backend)
      if (owner != null) await this.removeBytes(owner, blob.locator, 'a replaced or deleted object')
    }
  }

  /**
   * Removes bytes no row refers to (any more). The request has its answer either way (its own
   * failure is already on its way to the client), so a failure here is logged, not thrown: the
   * bytes stay behind on the backend until removed by hand.
   */
  private async removeBytes (backend: BlobBackend, locator: Locator, of: string): Promise<void> {
    await backend.remove(locator).catch((err: unknown) => {
      this.log.warn({ err, backend: backend.name, locator }, `removing the bytes of ${of} failed: they stay on the backend unreferenced`)
    })
  }

  private backendOf (name: string): BlobBackend {
    const backend = this.backends.get(name)
    if (backend == null) throw new StorageError('InternalError', 500, `the object is kept in the ${name} backend, which this node no longer has configured`)
    return backend
  }

  private async requireBucket (tx: Transaction, scope: StorageScope, bucket: string): Promise<void> {
    const found = await tx.query('SELECT 1 FROM bkg.buckets WHERE namespace = $1 AND name = $2', [scope.namespace, bucket])
    if (found.rows.length === 0) throw new StorageError('NoSuchBucket', 404, `no bucket ${bucket} in namespace ${scope.namespace}`)
  }

  private async requireUpload (tx: Transaction, scope: StorageScope, bucket: string, key: string, uploadId: string): Promise<{ content_type: string, metadata: Record<string, string> }> {
    const upload = (await tx.query<{ content_type: string, metadata: Record<string, string> }>(
      'SELECT content_type, metadata FROM bkg.uploads WHERE id = $1 AND namespace = $2 AND bucket = $3 AND key = $4', [uploadId, scope.namespace, bucket, key])).rows[0]
    if (upload == null) throw new StorageError('NoSuchUpload', 404, 'the specified multipart upload does not exist')
    return upload
  }

  private async run<T> (scope: StorageScope, fn: (tx: Transaction) => Promise<T>): Promise<T> {
    try {
      return scope.tenant == null ? await this.db.asNode(fn) : await this.db.asTenant(scope.tenant, fn)
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === '42501') throw new StorageError('AccessDenied', 403, `this credential (${scope.tenant?.role ?? 'node'}) may not do that in namespace ${scope.namespace}`)
      if (code === '23505') throw new StorageError('BucketAlreadyOwnedByYou', 409, 'the bucket already exists in this namespace')
      if (code === '23503') throw new StorageError('NoSuchBucket', 404, 'the bucket does not exist')
      throw err
    }
  }
}

/** readers are refused before any byte is read (the grants would refuse the row anyway) */
function assertWriter (scope: StorageScope): void {
  if (scope.tenant?.role === 'reader') throw new StorageError('AccessDenied', 403, 'a reader credential cannot write or delete objects')
}

function assertKey (key: string): void {
  if (key.length === 0 || Buffer.byteLength(key) > MAX_KEY_BYTES) throw new StorageError('KeyTooLongError', 400, `object keys are 1-${MAX_KEY_BYTES} bytes of UTF-8`)
  assertStorableText('the object key', key)
}

/** keys, prefixes and cursors reach the database as text, which holds neither NUL nor broken UTF-16 */
function assertStorableText (what: string, text: string | undefined): void {
  const reason = text == null ? null : unstorableReason(text)
  if (reason != null) throw new StorageError('InvalidArgument', 400, `${what} ${reason}`)
}

/** 5 GiB, 5 MiB, or a plain count of bytes (a size an operator set) */
function bytesText (bytes: number): string {
  for (const [unit, size] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`
  }
  return `${bytes} bytes`
}

function unquote (etag: string): string {
  return etag.replace(/^"|"$/g, '')
}

function toMeta (row: Row): ObjectMeta {
  return {
    bucket: row.bucket,
    key: row.key,
    size: Number(row.size),
    etag: row.etag,
    contentType: row.content_type,
    metadata: row.metadata,
    checksums: row.checksums,
    updatedAt: new Date(row.updated_at).toISOString()
  }
}
