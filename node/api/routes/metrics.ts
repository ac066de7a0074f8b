import type { FastifyPluginAsync } from 'fastify'
import type { NodeMetrics } from '../../metrics/index.ts'

export const metricsRoutes: FastifyPluginAsync<{ metrics: NodeMetrics }> = async (app, { metrics }) => {
  app.get('/metrics', {
    config: { access: 'token' },
    schema: { summary: 'Prometheus metrics', tags: ['node'] }
  }, async (_request, reply) => {
    const { registry } = metrics
    return reply.type(registry.contentType).send(await registry.metrics())
  })
}
