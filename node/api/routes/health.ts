import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { NodeStatus } from './node.ts'

export const healthRoutes: FastifyPluginAsyncZod<{ status: Pick<NodeStatus, 'peerId'> }> = async (app, { status }) => {
  app.get('/api/v1/health', {
    config: { access: 'public' },
    schema: {
      summary: 'Liveness: answers without a token',
      tags: ['node'],
      security: [],
      response: { 200: z.object({ status: z.literal('ok'), peerId: z.string() }) }
    }
  }, async () => ({ status: 'ok' as const, peerId: status.peerId }))
}
