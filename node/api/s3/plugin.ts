import { randomBytes } from 'node:crypto'
import { pipeline, Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Principal } from '../../auth/index.ts'
import { BkgError } from '../../../lib/bkg-error.ts'
import { AwsChunkedDecoder, awsChunkedOptions, isAwsChunkedPayload } from './aws-chunked.ts'
import {
  CHECKSUM_ALGORITHMS, checksumAlgorithmOf, checksumHeaderName,
  type ChecksumAlgorithm, type ObjectMeta, type PutOptions, type StorageScope
} from '../../storage/index.ts'
import { verifyRequest, type VerifiedRequest } from './sigv4.ts'
import { readXml, xml, xmlDocument } from './xml.ts'
import type { StorageService } from '../../storage/index.ts'

declare module 'fastify' {
  interface FastifyRequest {
    s3auth?: VerifiedRequest
  }
}

/** An S3 error document (HEAD: only the x-amz-error-code header). */
export async function sendS3Error (request: FastifyRequest, reply: FastifyReply, code: string, status: number, message: string): Promise<FastifyReply> {
  const requestId = String(reply.getHeader('x-amz-request-id') ?? '')
  if (request.method === 'HEAD') return await reply.status(status).header('x-amz-error-code', code).send()
  return await reply.status(status).header('content-type', 'application/xml').send(
    await xmlDocument({ Error: { Code: code, Message: message, Resource: request.url.split('?')[0], RequestId: requestId } }))
}

/** what S3 accepts as metadata headers: `x-amz-meta-<name>` */
function metadataOf (headers: FastifyRequest['headers']): Record<string, string> {
  const metadata: Record<string, string> = {}
  let bytes = 0
  for (const [name, value] of Object.entries(headers)) {
    if (!name.startsWith('x-amz-meta-') || typeof value !== 'string') continue
    metadata[name.slice('x-amz-meta-'.length)] = value
    bytes += name.length + value.length
  }
  if (bytes > 2048) throw new BkgError('MetadataTooLarge', 400, 'user metadata is limited to 2 KB')
  return metadata
}

function header (request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name]
  return typeof value === 'string' ? value : undefined
}

/** The body as sent (aws-chunked decoded) and the digests the client wants checked. */
function putInput (request: FastifyRequest): { body: AsyncIterable<Uint8Array>, options: PutOptions } {
  const auth = request.s3auth!
  const expected: PutOptions['expected'] = { checksums: {} }
  for (const algorithm of CHECKSUM_ALGORITHMS) {
    const value = header(request, checksumHeaderName(algorithm))
    if (value != null) expected.checksums[algorithm] = value
  }
  if (/^[0-9a-f]{64}$/.test(auth.payloadHash)) expected.sha256Hex = auth.payloadHash
  expected.md5Base64 = header(request, 'content-md5')
  const algorithms = new Set<ChecksumAlgorithm>()
  const requested = header(request, 'x-amz-sdk-checksum-algorithm')?.toLowerCase()
  if (requested != null && (CHECKSUM_ALGORITHMS as readonly string[]).includes(requested)) algorithms.add(requested as ChecksumAlgorithm)
  let body = (request.body ?? Readable.from([])) as Readable
  let trailers: PutOptions['trailers']
  if (isAwsChunkedPayload(auth.payloadHash)) {
    const options = awsChunkedOptions(auth, request.headers)
    for (const name of options.expectedTrailers ?? []) {
      const algorithm = checksumAlgorithmOf(name)
      if (algorithm != null) algorithms.add(algorithm)
    }
    const decoder = new AwsChunkedDecoder(options)
    // pipeline owns both streams' errors: a malformed body fails whoever reads the decoder, and
    // nobody's process when the request is refused before its body is read
    pipeline(body, decoder, () => {})
    body = decoder
    trailers = () => {
      const found: Partial<Record<ChecksumAlgorithm, string>> = {}
      for (const [name, value] of decoder.trailers) {
        const algorithm = checksumAlgorithmOf(name)
        if (algorithm != null) found[algorithm] = value
      }
      return found
    }
  }
  return {
    body,
    options: { contentType: header(request, 'content-type') ?? 'binary/octet-stream', metadata: metadataOf(request.headers), expected, algorithms: [...algorithms], trailers }
  }
}

function checksumHeaders (reply: FastifyReply, checksums: Partial<Record<ChecksumAlgorithm, string>>): void {
  for (const [algorithm, value] of Object.entries(checksums)) reply.header(checksumHeaderName(algorithm as ChecksumAlgorithm), value)
}

function objectHeaders (reply: FastifyReply, object: ObjectMeta): void {
  reply.header('etag', `"${object.etag}"`)
    .header('last-modified', new Date(object.updatedAt).toUTCString())
    .header('content-type', object.contentType)
    .header('accept-ranges', 'bytes')
  for (const [name, value] of Object.entries(object.metadata)) reply.header(`x-amz-meta-${name}`, value)
}

/** `bytes=a-b`, `bytes=a-` or `bytes=-n` within `size`; null for no (or an ignorable) Range header */
function rangeOf (value: string | undefined, size: number): { start: number, end: number } | null {
  if (value == null) return null
  const match = /^bytes=(\d*)-(\d*)$/.exec(value.trim())
  if (match == null || (match[1] === '' && match[2] === '')) return null
  let start: number
  let end: number
  if (match[1] === '') {
    start = Math.max(0, size - Number(match[2]))
    end = size - 1
  } else {
    start = Number(match[1])
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1)
  }
  if (start >= size || start > end) throw new BkgError('InvalidRange', 416, 'the requested range is not satisfiable')
  return { start, end }
}

/** Reads and drops a body the operation does not use (Fastify leaves `body` unset when there is none). */
async function drain (request: FastifyRequest): Promise<void> {
  if (request.body == null) return
  for await (const _ of request.body as Readable) { /* dropped */ }
}

/**
 * The S3-compatible subset, registered under the prefix `/s3` (path-style: `/s3/<bucket>/<key>`), for the official AWS SDK
 * unchanged: SigV4 (header or presigned URL), aws-chunked bodies, checksum headers and trailers,
 * buckets, objects, ListObjectsV2 and multipart uploads. The access key names the namespace;
 * every request runs as that namespace's tenant role, so RLS applies as for tokens.
 */
export async function s3Routes (app: FastifyInstance, { storage }: { storage: StorageService }): Promise<void> {
  // bodies are passed on as streams whatever their type, never parsed or buffered
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
  app.addHook('onRequest', async (_request, reply) => {
    reply.header('x-amz-request-id', randomBytes(8).toString('hex').toUpperCase())
  })
  app.addHook('preValidation', async (request) => {
    // S3 defines every query parameter once: a repeated one would reach the handlers as an array
    for (const [name, value] of Object.entries(request.query as Record<string, unknown>)) {
      if (Array.isArray(value)) throw new BkgError('InvalidArgument', 400, `query parameter ${name} is given more than once`)
    }
    const [path, query = ''] = request.url.split(/\?(.*)/s)
    let principal: Principal | undefined
    request.s3auth = verifyRequest({
      method: request.method,
      path,
      query,
      headers: request.headers,
      now: new Date(),
      lookupSecret: (accessKeyId) => {
        const resolved = storage.resolveAccessKey(accessKeyId)
        principal = resolved?.principal
        return resolved?.secretAccessKey ?? null
      }
    })
    request.principal = principal!
  })
  app.setErrorHandler(async (err: Error & { code?: string, status?: number, statusCode?: number }, request, reply) => {
    if (err instanceof BkgError) return await sendS3Error(request, reply, err.code, err.status, err.message)
    if ((err.statusCode ?? 500) < 500) return await sendS3Error(request, reply, 'InvalidRequest', err.statusCode!, err.message)
    request.log.error({ err }, 's3 request failed')
    return await sendS3Error(request, reply, 'InternalError', 500, 'internal error; see the node log')
  })
  app.setNotFoundHandler(async (request, reply) => await sendS3Error(request, reply, 'NotImplemented', 501, `${request.method} ${request.url.split('?')[0]} is not part of BKG's S3 subset`))

  const scope = (request: FastifyRequest): StorageScope => {
    const principal = request.principal!
    return { tenant: { role: principal.role, namespace: principal.namespace }, namespace: principal.namespace }
  }
  const objects = () => storage.objects
  const config = { access: 'public' as const }
  const keyOf = (request: FastifyRequest<{ Params: { bucket: string } }>): string => {
    const path = request.url.split('?')[0]
    const prefix = `/s3/${request.params.bucket}/`
    try {
      return decodeURIComponent(path.slice(path.indexOf(prefix) + prefix.length))
    } catch {
      throw new BkgError('InvalidURI', 400, 'the object key is not valid percent-encoded UTF-8')
    }
  }
  type BucketRequest = FastifyRequest<{ Params: { bucket: string }, Querystring: Record<string, string> }>

  app.get('/', { config, schema: { hide: true } }, async (request, reply) => {
    const buckets = await objects().listBuckets(scope(request))
    const owner = { ID: request.principal!.namespace, DisplayName: request.principal!.namespace }
    return reply.type('application/xml').send(await xml('ListAllMyBucketsResult', { Owner: owner, Buckets: { Bucket: buckets.map((b) => ({ Name: b.name, CreationDate: b.createdAt })) } }))
  })

  const createBucket = async (request: BucketRequest, reply: FastifyReply): Promise<FastifyReply> => {
    await drain(request) // a CreateBucketConfiguration, if any, is not needed
    await objects().createBucket(scope(request), request.params.bucket)
    return reply.header('location', `/${request.params.bucket}`).send()
  }
  const headBucket = async (request: BucketRequest, reply: FastifyReply): Promise<FastifyReply> => {
    await objects().headBucket(scope(request), request.params.bucket)
    return reply.send()
  }
  const deleteBucket = async (request: BucketRequest, reply: FastifyReply): Promise<FastifyReply> => {
    await objects().deleteBucket(scope(request), request.params.bucket)
    return reply.status(204).send()
  }
  const listObjects = async (request: BucketRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const q = request.query
    if (q['list-type'] !== '2') throw new BkgError('NotImplemented', 501, 'only ListObjectsV2 (list-type=2) is supported')
    const asked = q['max-keys'] == null ? 1000 : Number(q['max-keys'])
    if (!/^\d+$/.test(q['max-keys'] ?? '0') || !Number.isSafeInteger(asked)) throw new BkgError('InvalidArgument', 400, 'max-keys must be a non-negative integer')
    // as S3: a page holds at most 1000 keys, whatever was asked
    const maxKeys = Math.min(asked, 1000)
    let after = q['start-after']
    if (q['continuation-token'] != null) {
      const token = q['continuation-token']
      after = Buffer.from(token, 'base64url').toString('utf8')
      // a token this node issued is the base64url of a key: anything else was not issued here
      if (after === '' || Buffer.from(after, 'utf8').toString('base64url') !== token) throw new BkgError('InvalidArgument', 400, 'the continuation token is not valid')
    }
    const prefix = q.prefix ?? ''
    const urlEncode = q['encoding-type'] === 'url'
    const encode = (text: string): string => urlEncode ? encodeURIComponent(text).replace(/%2F/g, '/') : text
    const listed = maxKeys === 0
      ? { objects: [], prefixes: [], truncated: false, last: null }
      : await objects().list(scope(request), request.params.bucket, { prefix, delimiter: q.delimiter, after, maxKeys })
    const body: Record<string, unknown> = {
      Name: request.params.bucket,
      Prefix: encode(prefix),
      KeyCount: listed.objects.length + listed.prefixes.length,
      MaxKeys: maxKeys,
      IsTruncated: listed.truncated,
      Contents: listed.objects.map((o) => ({ Key: encode(o.key), LastModified: o.updatedAt, ETag: `"${o.etag}"`, Size: o.size, StorageClass: 'STANDARD' })),
      CommonPrefixes: listed.prefixes.map((p) => ({ Prefix: encode(p) }))
    }
    if (q.delimiter != null) body.Delimiter = encode(q.delimiter)
    if (urlEncode) body.EncodingType = 'url'
    if (q['continuation-token'] != null) body.ContinuationToken = q['continuation-token']
    if (q['start-after'] != null) body.StartAfter = encode(q['start-after'])
    if (listed.truncated && listed.last != null) body.NextContinuationToken = Buffer.from(listed.last).toString('base64url')
    return reply.type('application/xml').send(await xml('ListBucketResult', body))
  }
  // the SDK addresses a bucket as `/s3/<bucket>` or `/s3/<bucket>/`: both are the bucket
  const bucketOnly = { config, schema: { hide: true }, exposeHeadRoute: false }
  app.put('/:bucket', bucketOnly, createBucket)
  app.head('/:bucket', bucketOnly, headBucket)
  app.delete('/:bucket', bucketOnly, deleteBucket)
  app.get('/:bucket', bucketOnly, listObjects)

  app.put('/:bucket/*', { config, schema: { hide: true } }, async (request: BucketRequest, reply) => {
    if (keyOf(request) === '') return await createBucket(request, reply)
    if (request.headers['x-amz-copy-source'] != null) throw new BkgError('NotImplemented', 501, 'CopyObject is not supported')
    const key = keyOf(request)
    const { body, options } = putInput(request)
    const q = request.query
    if (q.uploadId != null || q.partNumber != null) {
      const part = await objects().putPart(scope(request), request.params.bucket, key, q.uploadId ?? '', Number(q.partNumber), body, options)
      checksumHeaders(reply, part.checksums)
      return reply.header('etag', `"${part.etag}"`).send()
    }
    const stored = await objects().putObject(scope(request), request.params.bucket, key, body, options)
    checksumHeaders(reply, stored.checksums)
    return reply.header('etag', `"${stored.etag}"`).send()
  })

  const getOrHead = async (request: BucketRequest, reply: FastifyReply): Promise<FastifyReply> => {
    if (keyOf(request) === '') return request.method === 'HEAD' ? await headBucket(request, reply) : await listObjects(request, reply)
    const object = await objects().getObject(scope(request), request.params.bucket, keyOf(request))
    const range = rangeOf(header(request, 'range'), object.size)
    objectHeaders(reply, object)
    if (range == null && header(request, 'x-amz-checksum-mode')?.toUpperCase() === 'ENABLED') checksumHeaders(reply, object.checksums)
    if (range != null) reply.status(206).header('content-range', `bytes ${range.start}-${range.end}/${object.size}`)
    reply.header('content-length', range == null ? object.size : range.end - range.start + 1)
    if (request.method === 'HEAD') return reply.send()
    return reply.send(Readable.from(objects().read(object, range ?? undefined)))
  }
  app.get('/:bucket/*', { config, schema: { hide: true }, exposeHeadRoute: false }, getOrHead)
  app.head('/:bucket/*', { config, schema: { hide: true } }, getOrHead)

  app.delete('/:bucket/*', { config, schema: { hide: true } }, async (request: BucketRequest, reply) => {
    if (keyOf(request) === '') return await deleteBucket(request, reply)
    if (request.query.uploadId != null) await objects().abortUpload(scope(request), request.params.bucket, keyOf(request), request.query.uploadId)
    else await objects().deleteObject(scope(request), request.params.bucket, keyOf(request))
    return reply.status(204).send()
  })

  app.post('/:bucket/*', { config, schema: { hide: true } }, async (request: BucketRequest, reply) => {
    const key = keyOf(request)
    const q = request.query
    if ('uploads' in q) {
      await drain(request)
      const uploadId = await objects().createUpload(scope(request), request.params.bucket, key, header(request, 'content-type') ?? 'binary/octet-stream', metadataOf(request.headers))
      return reply.type('application/xml').send(await xml('InitiateMultipartUploadResult', { Bucket: request.params.bucket, Key: key, UploadId: uploadId }))
    }
    if (q.uploadId != null) {
      const document = await readXml(request)
      const parts = (document?.CompleteMultipartUpload?.Part ?? []) as Array<{ PartNumber?: string, ETag?: string }>
      const list = parts.map((part) => ({ partNumber: Number(part.PartNumber), etag: String(part.ETag ?? '') }))
      if (list.some((part) => !Number.isInteger(part.partNumber))) throw new BkgError('MalformedXML', 400, 'every Part needs a PartNumber')
      const object = await objects().completeUpload(scope(request), request.params.bucket, key, q.uploadId, list)
      return reply.type('application/xml').send(await xml('CompleteMultipartUploadResult', { Location: `/s3/${request.params.bucket}/${encodeURIComponent(key)}`, Bucket: request.params.bucket, Key: key, ETag: `"${object.etag}"` }))
    }
    throw new BkgError('NotImplemented', 501, 'POST on an object supports ?uploads and ?uploadId only')
  })
}
