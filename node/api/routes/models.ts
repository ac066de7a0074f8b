import { Readable } from 'node:stream'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { CID } from 'multiformats/cid'
import { z } from 'zod'
import { ModelName, ModelVersion } from '../../../protocols/model-package.ts'
import { BkgError } from '../../../lib/bkg-error.ts'
import { catalogSummary, modelSummary, type ModelService } from '../../models/index.ts'
import { msUntilExpiry } from '../../auth/index.ts'

/** the largest package a node accepts over HTTP */
const MAX_PACKAGE_BYTES = 256 * 1024 ** 3
/** longest a GET of a pull job waits for the pull to finish */
const MAX_PULL_WAIT_MS = 30_000

const ModelSummary = z.object({
  name: z.string(),
  version: z.string(),
  architecture: z.string(),
  licence: z.string(),
  publisher: z.object({ peerId: z.string(), name: z.string(), serial: z.string() }),
  createdAt: z.string(),
  addedAt: z.string(),
  totalSize: z.number(),
  /** directory on the node holding the checked files (for local runtimes) */
  location: z.string(),
  files: z.array(z.object({ path: z.string(), size: z.number(), sha256: z.string(), cid: z.string() }))
})
const ModelParams = z.object({ name: z.string().max(64), version: z.string().max(64) })

/** package refusals are the client's fault (400/409/422), never a server error */
export const modelRoutes: FastifyPluginAsyncZod<{ models: ModelService }> = async (app, { models }) => {
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload))

  app.get('/api/v1/models', {
    config: { access: 'token' },
    schema: { summary: 'Models held by this node', tags: ['models'], response: { 200: z.array(ModelSummary) } }
  }, async () => models.list().map(modelSummary))

  app.post('/api/v1/models', {
    config: { access: 'admin' },
    schema: {
      summary: 'Publish a signed .bkg package (request body, application/octet-stream): verify, store, announce in the DHT, gossip the manifest',
      tags: ['models'],
      response: {
        200: ModelSummary.extend({ added: z.boolean(), announced: z.number(), recipients: z.number() }),
        201: ModelSummary.extend({ added: z.boolean(), announced: z.number(), recipients: z.number() })
      }
    }
  }, async (request, reply) => {
    if (!(request.body instanceof Readable)) throw new BkgError('unsupported_media_type', 415, 'send the .bkg package as application/octet-stream')
    // a custom content-type parser bypasses Fastify's bodyLimit: the service counts
    const result = await models.publishUpload(request.body, MAX_PACKAGE_BYTES)
    return await reply.status(result.added ? 201 : 200).send({ ...modelSummary(result.model), added: result.added, announced: result.announced, recipients: result.recipients })
  })

  app.get('/api/v1/models/:name/:version', {
    config: { access: 'token' },
    schema: { summary: 'One held model with its signed manifest', tags: ['models'], params: ModelParams, response: { 200: ModelSummary } }
  }, async (request) => {
    const model = models.get(request.params.name, request.params.version)
    if (model == null) throw new BkgError('model_not_found', 404, `no model ${request.params.name}@${request.params.version} here`)
    return modelSummary(model)
  })

  app.delete('/api/v1/models/:name/:version', {
    config: { access: 'admin' },
    schema: { summary: 'Remove a held model and the blocks no other model needs', tags: ['models'], params: ModelParams, response: { 200: ModelSummary } }
  }, async (request) => {
    return modelSummary(await models.remove(request.params.name, request.params.version))
  })

  app.post('/api/v1/models/:name/:version/verify', {
    config: { access: 'admin' },
    schema: { summary: 'Re-read every file of a held model and check it against the signed manifest', tags: ['models'], params: ModelParams, response: { 200: ModelSummary } }
  }, async (request) => {
    return modelSummary(await models.verify(request.params.name, request.params.version))
  })

  app.get('/api/v1/models/catalog', {
    config: { access: 'token' },
    schema: {
      summary: 'Models announced in the mesh (signed manifests verified on arrival): what can be pulled',
      tags: ['models'],
      response: { 200: z.array(z.object({ name: z.string(), version: z.string(), publisher: z.string(), origin: z.string(), totalSize: z.number(), seenAt: z.string() })) }
    }
  }, async () => models.catalogEntries().map(catalogSummary))

  const PullJob = z.object({
    id: z.string(),
    state: z.enum(['resolving', 'fetching', 'verifying', 'done', 'failed']),
    name: z.string(),
    version: z.string().nullable(),
    totalBytes: z.number(),
    bytes: z.number(),
    blocks: z.number(),
    resumedBlocks: z.number(),
    fetchedBlocks: z.number(),
    peers: z.array(z.string()),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    startedAt: z.string(),
    finishedAt: z.string().nullable()
  })

  app.post('/api/v1/models/pulls', {
    config: { access: 'admin' },
    schema: {
      summary: 'Pull a model from its providers (the newest version when none is given); returns the job to poll',
      tags: ['models'],
      body: z.object({ name: ModelName, version: ModelVersion.optional() }).strict(),
      response: { 202: PullJob }
    }
  }, async (request, reply) => {
    return await reply.status(202).send({ ...models.startPull(request.body.name, request.body.version ?? null) })
  })

  app.get('/api/v1/models/pulls', {
    config: { access: 'token' },
    schema: { summary: 'Pull jobs since the node started: every running one and the newest 256 finished ones', tags: ['models'], response: { 200: z.array(PullJob) } }
  }, async () => models.listJobs().map((job) => ({ ...job })))

  app.get('/api/v1/models/pulls/:id', {
    config: { access: 'token' },
    schema: {
      summary: 'Progress of a pull: bytes, blocks, providers, state. With `wait`, answers as soon as the pull finishes, at the latest after `wait` ms (a long poll)',
      tags: ['models'],
      params: z.object({ id: z.string().max(64) }),
      querystring: z.object({ wait: z.coerce.number().int().min(0).max(MAX_PULL_WAIT_MS).optional() }).strict(),
      response: { 200: PullJob }
    }
  }, async (request) => {
    const job = await models.waitForJob(request.params.id, Math.min(request.query.wait ?? 0, msUntilExpiry(request.principal!)))
    if (job == null) throw new BkgError('pull_not_found', 404, `no pull ${request.params.id}`)
    return { ...job }
  })

  app.get('/api/v1/content/:cid/providers', {
    config: { access: 'token' },
    schema: {
      summary: 'Peers that announced a CID in the DHT (as `routing findprovs`)',
      tags: ['models'],
      params: z.object({ cid: z.string().min(1).max(128) }),
      querystring: z.object({ max: z.coerce.number().int().min(1).max(100).default(20) }),
      response: { 200: z.array(z.object({ peerId: z.string(), addrs: z.array(z.string()) })) }
    }
  }, async (request) => {
    let cid: CID
    try {
      cid = CID.parse(request.params.cid)
    } catch {
      throw new BkgError('invalid_cid', 400, `"${request.params.cid.slice(0, 80)}" is not a CID`)
    }
    return await models.findProviders(cid, request.query.max)
  })

  app.get('/api/v1/models/:name/:version/files/*', {
    config: { access: 'token' },
    schema: {
      summary: 'A file of a held model; every block is checked against its CID as it is sent',
      tags: ['models'],
      params: ModelParams.extend({ '*': z.string().min(1).max(512) })
    }
  }, async (request, reply) => {
    const file = await models.openFile(request.params.name, request.params.version, request.params['*'])
    // the first block is read (and CID-checked) before any header goes out, so a corrupt store
    // answers 422 rather than a 200 that breaks off
    const iterator = file.content[Symbol.asyncIterator]()
    const first = await iterator.next()
    async function * rest (): AsyncGenerator<Uint8Array> {
      if (first.done !== true) yield first.value
      while (true) {
        const next = await iterator.next()
        if (next.done === true) return
        yield next.value
      }
    }
    return await reply
      .header('content-type', 'application/octet-stream')
      .header('content-length', String(file.size))
      .header('etag', `"sha256-${file.sha256}"`)
      .header('x-content-sha256', file.sha256)
      .send(Readable.from(rest()))
  })
}
