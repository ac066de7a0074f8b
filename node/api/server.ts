import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import websocket from '@fastify/websocket'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import type { Logger } from 'pino'
import type { BkgNode } from '../create-node.ts'
import { MAX_REALTIME_FRAME_BYTES } from '../../protocols/realtime.ts'
import { VERSION } from '../version.ts'
import { authPlugin } from './auth.ts'
import { ApiError, installErrorHandlers } from './errors.ts'
import { crlRoutes } from './routes/crl.ts'
import { eventRoutes } from './routes/events.ts'
import { healthRoutes } from './routes/health.ts'
import { metricsRoutes } from './routes/metrics.ts'
import { modelRoutes } from './routes/models.ts'
import { nodeRoutes } from './routes/node.ts'
import { peerRoutes } from './routes/peers.ts'
import { pubsubRoutes } from './routes/pubsub.ts'
import { realtimeRoutes } from './routes/realtime.ts'
import { replicationRoutes } from './routes/replication.ts'
import { s3Routes } from './routes/s3.ts'
import { storageRoutes } from './routes/storage.ts'
import { tokenRoutes } from './routes/tokens.ts'

export interface ApiServerInit {
  log: Logger
  keys: { adminToken: string, secret: string }
  rateLimitPerMinute: number
  /** resolved lazily: the node and its API are created together */
  node: () => BkgNode
}

export interface ApiServer {
  app: FastifyInstance
  /** listens on HOST:PORT and returns the base URL */
  listen: (hostPort: string) => Promise<string>
  close: () => Promise<void>
}

export interface RouteDeps {
  node: () => BkgNode
  keys: { adminToken: string, secret: string }
}

export async function createApiServer (init: ApiServerInit): Promise<ApiServer> {
  const app = Fastify({ loggerInstance: init.log as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: 1024 * 1024 })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  installErrorHandlers(app)

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'BKG node API', version: VERSION, description: 'HTTP API of a BKG mesh node' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }]
    },
    transform: jsonSchemaTransform
  })
  await app.register(rateLimit, {
    max: init.rateLimitPerMinute,
    timeWindow: 60_000,
    errorResponseBuilder: (_request, context) =>
      new ApiError(429, 'rate_limited', `more than ${context.max} requests per minute; retry in ${Math.ceil(context.ttl / 1000)} s`)
  })
  await app.register(authPlugin, { keys: init.keys })
  await app.register(websocket, { options: { maxPayload: MAX_REALTIME_FRAME_BYTES } })

  const metrics = () => init.node().metrics
  app.addHook('onResponse', async (request, reply) => {
    metrics().httpRequests.inc({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) })
  })

  const deps: RouteDeps = { node: init.node, keys: init.keys }
  await app.register(healthRoutes, deps)
  await app.register(nodeRoutes, deps)
  await app.register(peerRoutes, deps)
  await app.register(pubsubRoutes, deps)
  await app.register(tokenRoutes, deps)
  await app.register(crlRoutes, deps)
  await app.register(modelRoutes, deps)
  await app.register(replicationRoutes, deps)
  await app.register(eventRoutes, deps)
  await app.register(realtimeRoutes, deps)
  await app.register(storageRoutes, deps)
  await app.register(s3Routes, { ...deps, prefix: '/s3' })
  await app.register(metricsRoutes, deps)
  app.get('/api/v1/openapi.json', { config: { access: 'public' }, schema: { hide: true } }, async () => app.swagger())

  return {
    app,
    async listen (hostPort) {
      const separator = hostPort.lastIndexOf(':')
      const host = hostPort.slice(0, separator).replace(/^\[|\]$/g, '')
      const port = Number(hostPort.slice(separator + 1))
      await app.listen({ host, port })
      const address = app.server.address()
      const actualPort = typeof address === 'object' && address != null ? address.port : port
      const urlHost = host.includes(':') ? `[${host}]` : host
      return `http://${urlHost}:${actualPort}`
    },
    async close () {
      await app.close()
    }
  }
}
