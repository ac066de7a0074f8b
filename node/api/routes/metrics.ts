import type { FastifyPluginAsync } from 'fastify'
import type { RouteDeps } from '../server.ts'

export const metricsRoutes: FastifyPluginAsync<RouteDeps> = async (app, { node }) => {
  app.get('/metrics', {
    config: { access: 'token' },
    schema: { summary: 'Prometheus metrics', tags: ['node'] }
  }, async (_request, reply) => {
    const { registry } = node().metrics
    return reply.type(registry.contentType).send(await registry.metrics())
  })
}
