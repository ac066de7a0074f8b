import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { NAMESPACE_PATTERN } from '../../../ca/roles.ts'
import { ModelName, ModelVersion } from '../../../protocols/model-package.ts'
import { MAX_REPLICAS } from '../../../protocols/replicas.ts'
import type { ReplicationService } from '../../replication/index.ts'

const Job = z.object({
  id: z.string(),
  name: z.string(),
  version: z.string(),
  namespace: z.string(),
  replicas: z.number(),
  state: z.enum(['replicating', 'done', 'cancelled']),
  holders: z.array(z.string()),
  eligible: z.number(),
  pulling: z.boolean(),
  createdBy: z.string(),
  createdAt: z.string(),
  updatedAt: z.string()
})
const Holder = z.object({ peerId: z.string(), live: z.boolean(), since: z.string() })
const JobParams = z.object({ id: z.string().max(64) })

export const replicationRoutes: FastifyPluginAsyncZod<{ replication: ReplicationService }> = async (app, { replication }) => {
  app.post('/api/v1/replication', {
    config: { access: 'admin' },
    schema: {
      summary: 'Create a job: keep N verified replicas of a model among the nodes of a namespace (the node needs the admin role)',
      tags: ['replication'],
      body: z.object({
        name: ModelName,
        version: ModelVersion.optional(),
        namespace: z.string().regex(NAMESPACE_PATTERN, 'a namespace: lowercase letters, digits, . _ -'),
        replicas: z.number().int().min(1).max(MAX_REPLICAS)
      }).strict(),
      response: { 201: Job }
    }
  }, async (request, reply) => await reply.status(201).send(await replication.createJob(request.body)))

  app.get('/api/v1/replication', {
    config: { access: 'token' },
    schema: { summary: 'Replication jobs of the mesh and their state as this node sees it', tags: ['replication'], response: { 200: z.array(Job) } }
  }, async () => await replication.jobs())

  app.get('/api/v1/replication/:id', {
    config: { access: 'token' },
    schema: { summary: 'One replication job: live verified holders, eligible nodes, done or not', tags: ['replication'], params: JobParams, response: { 200: Job } }
  }, async (request) => await replication.job(request.params.id))

  app.delete('/api/v1/replication/:id', {
    config: { access: 'admin' },
    schema: { summary: 'Cancel a job (on the node that created it); replicas already made stay', tags: ['replication'], params: JobParams, response: { 200: Job } }
  }, async (request) => await replication.cancelJob(request.params.id))

  app.get('/api/v1/replicas', {
    config: { access: 'token' },
    schema: {
      summary: 'Which nodes hold which model versions (the replica log); live = this node or a connected admitted peer',
      tags: ['replication'],
      response: { 200: z.array(z.object({ name: z.string(), version: z.string(), holders: z.array(Holder) })) }
    }
  }, async () => await replication.replicaTable())
}
