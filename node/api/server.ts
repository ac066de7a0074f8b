import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import websocket from '@fastify/websocket'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import type { Logger } from 'pino'
import { MAX_REALTIME_FRAME_BYTES } from '../../protocols/realtime.ts'
import { describeJsonError, parseUntrustedJson, unstorableReason, UntrustedJsonError } from '../../protocols/untrusted-json.ts'
import { VERSION } from '../version.ts'
import type { EventService, RoomHub } from '../events/index.ts'
import type { NodeMetrics } from '../metrics/index.ts'
import type { ModelService } from '../models/index.ts'
import type { PeerDirectory } from '../peers/index.ts'
import type { PubsubService } from '../pubsub/index.ts'
import type { ReplicationService } from '../replication/index.ts'
import type { RevocationService } from '../revocation/index.ts'
import type { StorageService } from '../storage/index.ts'
import type { SandboxApi } from '../sandbox/index.ts'
import type { LlmApi } from '../llm/index.ts'
import { mcpRoutes } from '../mcp/index.ts'
import { authPlugin, principalOf, requestToken, type ApiKeys } from './auth.ts'
import { nodeRoutes, type NodeStatus } from './routes/node.ts'
import { splitHostPort, type ApiTlsOptions } from './tls.ts'
import { clientErrorHandler, errorBody, installErrorHandlers, isS3Path, routerRefusal } from './errors.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { crlRoutes } from './routes/crl.ts'
import { eventRoutes } from './routes/events.ts'
import { healthRoutes } from './routes/health.ts'
import { metricsRoutes } from './routes/metrics.ts'
import { modelRoutes } from './routes/models.ts'
import { peerRoutes } from './routes/peers.ts'
import { pubsubRoutes } from './routes/pubsub.ts'
import { realtimeRoutes } from './routes/realtime.ts'
import { replicationRoutes } from './routes/replication.ts'
import { s3Routes, sendS3Error } from './s3/plugin.ts'
import { storageRoutes } from './routes/storage.ts'
import { tokenRoutes } from './routes/tokens.ts'
import { sandboxRoutes } from './routes/sandboxes.ts'
import { llmRoutes } from './routes/llm.ts'
import { openAiRoutes } from './routes/openai.ts'

export interface ApiServerInit {
  log: Logger
  /** serve HTTPS (node/api/tls.ts); `adminCheck` runs on admin routes after their token check */
  tls?: { server: ApiTlsOptions, adminCheck: ((request: FastifyRequest) => void) | null } | null
  keys: ApiKeys
  rateLimitPerMinute: number
  services: ApiServices
}

/** The services the API serves; each route plugin is given only those it uses. */
export interface ApiServices {
  status: NodeStatus
  metrics: NodeMetrics
  peers: PeerDirectory
  pubsub: PubsubService
  revocation: RevocationService
  models: ModelService
  replication: ReplicationService
  events: EventService
  rooms: RoomHub
  storage: StorageService
  sandboxes: SandboxApi
  llm: LlmApi
}

export interface ApiServer {
  app: FastifyInstance
  /** listens on HOST:PORT and returns the base URL */
  listen: (hostPort: string) => Promise<string>
  close: () => Promise<void>
}

/**
 * Whose budget a request spends: a valid bearer token's own (so callers with tokens are not
 * starved by anonymous traffic from their address), else the client address. Forged or expired
 * tokens count against the address, as failed logins should.
 */
function rateLimitKey (request: FastifyRequest, keys: ApiKeys): string {
  const token = requestToken(request, true)
  const principal = token != null ? principalOf(request, token, keys) : null
  return principal != null ? `token:${principal.tokenId}` : `ip:${request.ip}`
}

/**
 * JSON bodies go through the untrusted-JSON parser (depth and size before parsing, storable
 * strings after), and path and query values are checked for NUL and unpaired surrogates before
 * any route sees them.
 */
function installUntrustedInputGuards (app: FastifyInstance): void {
  app.removeContentTypeParser('application/json')
  // read as bytes: the fatal UTF-8 decode refuses invalid sequences instead of turning them into U+FFFD
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => {
    try {
      done(null, parseUntrustedJson(body as Buffer, { refuseProtoKeys: true }))
    } catch (err) {
      done(err instanceof UntrustedJsonError ? new BkgError('invalid_request', 400, describeJsonError(err, 'body')) : err as Error, undefined)
    }
  })
  app.addHook('preValidation', async (request) => {
    for (const [part, values] of [['path', request.params], ['query', request.query]] as const) {
      if (values == null || typeof values !== 'object') continue
      for (const [name, value] of Object.entries(values)) {
        for (const text of Array.isArray(value) ? value : [value]) {
          if (typeof text !== 'string') continue
          const reason = unstorableReason(text)
          if (reason != null) throw new BkgError('invalid_request', 400, `${part} parameter ${name} ${reason}`)
        }
      }
    }
  })
}

export async function createApiServer (init: ApiServerInit): Promise<ApiServer> {
  const app = Fastify({
    loggerInstance: init.log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    // long enough for any parameter the API defines; longer ones are refused by frameworkErrors
    routerOptions: { maxParamLength: 1024 },
    frameworkErrors: (err, request, reply) => {
      const refusal = routerRefusal(err)
      if (isS3Path(request.url)) return sendS3Error(request as FastifyRequest, reply as FastifyReply, refusal.s3Code, refusal.status, refusal.message)
      return (reply as FastifyReply).status(refusal.status).send(errorBody(refusal.code, refusal.message))
    },
    clientErrorHandler,
    ...(init.tls != null ? { https: init.tls.server } : {})
  }) as unknown as FastifyInstance
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
    keyGenerator: (request) => rateLimitKey(request, init.keys),
    // a liveness probe must answer whoever else shares its address; health does no work to abuse
    allowList: (request) => request.routeOptions.url === '/api/v1/health',
    errorResponseBuilder: (_request, context) =>
      new BkgError('rate_limited', 429, `more than ${context.max} requests per minute; retry in ${Math.ceil(context.ttl / 1000)} s`)
  })
  await app.register(authPlugin, { keys: init.keys, adminCheck: init.tls?.adminCheck })
  installUntrustedInputGuards(app)
  // JSON routes take JSON: a text/plain body is a 415 like any other type, not a string that fails validation
  app.removeContentTypeParser('text/plain')
  await app.register(websocket, {
    options: { maxPayload: MAX_REALTIME_FRAME_BYTES },
    // a socket error is the client's (a frame over the limit, a broken connection): ws closes it;
    // logged at debug so that any token holder cannot fill the error log
    errorHandler: (err, socket, request) => {
      request.log.debug({ err }, 'realtime socket error')
      socket.terminate()
    }
  })

  const { services, keys } = init
  app.addHook('onResponse', async (request, reply) => {
    services.metrics.httpRequests.inc({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) })
  })

  await app.register(healthRoutes, { status: services.status })
  await app.register(nodeRoutes, { status: services.status })
  await app.register(peerRoutes, { peers: services.peers })
  await app.register(pubsubRoutes, { pubsub: services.pubsub, metrics: services.metrics })
  await app.register(tokenRoutes, { keys })
  await app.register(crlRoutes, { revocation: services.revocation })
  await app.register(modelRoutes, { models: services.models })
  await app.register(replicationRoutes, { replication: services.replication })
  await app.register(eventRoutes, { events: services.events })
  await app.register(realtimeRoutes, { events: services.events, rooms: services.rooms, keys })
  await app.register(storageRoutes, { storage: services.storage })
  await app.register(s3Routes, { storage: services.storage, prefix: '/s3' })
  await app.register(sandboxRoutes, { sandboxes: services.sandboxes })
  await app.register(llmRoutes, { llm: services.llm, keys })
  await app.register(openAiRoutes, { llm: services.llm })
  await app.register(mcpRoutes, {
    services: { sandboxes: services.sandboxes, peers: services.peers, models: services.models, events: services.events, storage: services.storage, llm: services.llm },
    principalOf: (request) => request.principal,
    adminCheck: init.tls?.adminCheck,
    log: init.log
  })
  await app.register(metricsRoutes, { metrics: services.metrics })
  app.get('/api/v1/openapi.json', { config: { access: 'public' }, schema: { hide: true } }, async () => app.swagger())

  return {
    app,
    async listen (hostPort) {
      const { host, port } = splitHostPort(hostPort)
      await app.listen({ host, port })
      const address = app.server.address()
      const actualPort = typeof address === 'object' && address != null ? address.port : port
      // a wildcard bind is not an address to connect to: the URL (api.json, the started line) names
      // this machine's loopback, which the wildcard includes and the default certificate names
      const connectHost = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host
      const urlHost = connectHost.includes(':') ? `[${connectHost}]` : connectHost
      return `${init.tls != null ? 'https' : 'http'}://${urlHost}:${actualPort}`
    },
    async close () {
      await app.close()
    }
  }
}
