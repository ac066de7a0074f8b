import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { NAMESPACE_PATTERN } from '../../../ca/roles.ts'
import { TOKEN_ROLES } from '../../auth/index.ts'
import type { ObjectMeta, StorageScope, StorageService } from '../../storage/index.ts'
import { BkgError } from '../../../lib/bkg-error.ts'

const Namespace = z.string().regex(NAMESPACE_PATTERN, 'namespace: 1-63 of a-z 0-9 . _ -')

/** The caller's namespace: a token's own, or (node admin token) the one it names. */
function scopeOf (request: FastifyRequest, namespace: string | undefined): StorageScope {
  const principal = request.principal!
  if (principal.kind === 'node-admin') {
    if (namespace == null) throw new BkgError('invalid_request', 400, 'the node admin token must name a namespace (?namespace=NS)')
    return { tenant: null, namespace }
  }
  if (namespace != null && namespace !== principal.namespace) throw new BkgError('forbidden', 403, `this token is for namespace ${principal.namespace}, not ${namespace}`)
  return { tenant: { role: principal.role, namespace: principal.namespace }, namespace: principal.namespace }
}

function out (object: ObjectMeta): ObjectMeta {
  const { bucket, key, size, etag, contentType, metadata, checksums, updatedAt } = object
  return { bucket, key, size, etag, contentType, metadata, checksums, updatedAt }
}

/** `/api/v1/storage`: buckets and objects with bearer tokens, JSON metadata, raw object bodies. */
export const storageRoutes: FastifyPluginAsyncZod<{ storage: StorageService }> = async (app, { storage }) => {
  const objects = () => storage.objects
  const token = { access: 'token' as const }

  app.post('/api/v1/storage/credentials', {
    config: { access: 'admin' },
    schema: {
      summary: 'S3 access keys for a namespace (as `bkg storage credentials`)',
      tags: ['storage'],
      body: z.object({ namespace: Namespace, role: z.enum(TOKEN_ROLES).default('writer') }).strict(),
      response: { 200: z.object({ accessKeyId: z.string(), secretAccessKey: z.string() }) }
    }
  }, async (request) => storage.credentials(request.body.namespace, request.body.role))

  app.get('/api/v1/storage/buckets', {
    config: token,
    schema: { summary: 'Buckets of the namespace', tags: ['storage'], querystring: z.object({ namespace: Namespace.optional() }).strict() }
  }, async (request) => ({ buckets: await objects().listBuckets(scopeOf(request, request.query.namespace)) }))

  app.post('/api/v1/storage/buckets', {
    config: token,
    schema: { summary: 'Create a bucket (admin token of the namespace, or the node admin)', tags: ['storage'], body: z.object({ name: z.string().max(63), namespace: Namespace.optional() }).strict() }
  }, async (request, reply) => {
    await objects().createBucket(scopeOf(request, request.body.namespace), request.body.name)
    return await reply.status(201).send({ name: request.body.name })
  })

  app.delete('/api/v1/storage/buckets/:bucket', {
    config: token,
    schema: { summary: 'Delete an empty bucket', tags: ['storage'], params: z.object({ bucket: z.string().max(63) }), querystring: z.object({ namespace: Namespace.optional() }).strict() }
  }, async (request, reply) => {
    await objects().deleteBucket(scopeOf(request, request.query.namespace), request.params.bucket)
    return await reply.status(204).send()
  })

  app.get('/api/v1/storage/buckets/:bucket/objects', {
    config: token,
    schema: {
      summary: 'Objects of a bucket in key order; `prefix`, `delimiter` (common prefixes), `after` (exclusive), `limit` (1-1000)',
      tags: ['storage'],
      params: z.object({ bucket: z.string().max(63) }),
      querystring: z.object({
        namespace: Namespace.optional(),
        prefix: z.string().max(1024).default(''),
        delimiter: z.string().max(16).optional(),
        after: z.string().max(1024).optional(),
        limit: z.coerce.number().int().min(1).max(1000).default(1000)
      }).strict()
    }
  }, async (request) => {
    const { namespace, prefix, delimiter, after, limit } = request.query
    const listed = await objects().list(scopeOf(request, namespace), request.params.bucket, { prefix, delimiter, after, maxKeys: limit })
    return { objects: listed.objects.map(out), prefixes: listed.prefixes, next: listed.truncated ? listed.last : null }
  })

  // object bodies are streams of any type: their own scope without Fastify's body parsers
  await app.register(async (raw: FastifyInstance) => {
    raw.removeAllContentTypeParsers()
    raw.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
    type ObjectRequest = FastifyRequest<{ Params: { bucket: string, '*': string }, Querystring: { namespace?: string } }>
    const target = (request: ObjectRequest): { scope: StorageScope, bucket: string, key: string } => {
      const namespace = request.query.namespace
      if (namespace != null && !NAMESPACE_PATTERN.test(namespace)) throw new BkgError('invalid_request', 400, 'namespace: 1-63 of a-z 0-9 . _ -')
      const key = request.params['*']
      if (key === '') throw new BkgError('invalid_request', 400, 'the path needs an object key: /api/v1/storage/objects/<bucket>/<key>')
      return { scope: scopeOf(request, namespace), bucket: request.params.bucket, key }
    }
    const schema = { tags: ['storage'], hide: false }

    raw.put('/api/v1/storage/objects/:bucket/*', { config: token, schema: { ...schema, summary: 'Store an object (the request body, any content type); `x-checksum-sha256` (hex) is checked if sent' } }, async (request: ObjectRequest, reply) => {
      const { scope, bucket, key } = target(request)
      const sha256 = request.headers['x-checksum-sha256']
      const stored = await objects().putObject(scope, bucket, key, (request.body ?? Readable.from([])) as AsyncIterable<Uint8Array>, {
        contentType: request.headers['content-type'] ?? 'application/octet-stream',
        metadata: {},
        expected: { sha256Hex: typeof sha256 === 'string' ? sha256.toLowerCase() : undefined, checksums: {} },
        algorithms: ['sha256']
      })
      return await reply.status(200).send(out(stored))
    })

    raw.get('/api/v1/storage/objects/:bucket/*', { config: token, schema: { ...schema, summary: 'An object\'s bytes, with its content type, etag and size' } }, async (request: ObjectRequest, reply) => {
      const { scope, bucket, key } = target(request)
      const object = await objects().getObject(scope, bucket, key)
      reply.header('content-type', object.contentType).header('content-length', object.size).header('etag', `"${object.etag}"`)
      if (request.method === 'HEAD') return await reply.send()
      return await reply.send(Readable.from(objects().read(object)))
    })

    raw.delete('/api/v1/storage/objects/:bucket/*', { config: token, schema: { ...schema, summary: 'Delete an object (no error if it is already gone)' } }, async (request: ObjectRequest, reply) => {
      const { scope, bucket, key } = target(request)
      await objects().deleteObject(scope, bucket, key)
      return await reply.status(204).send()
    })
  })
}
