import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { BkgError } from '../../lib/bkg-error.ts'
import { principalOf, requestToken, type ApiKeys } from './auth.ts'

export interface TokenWebSocketRoute {
  url: string
  summary: string
  tags: string[]
  keys: ApiKeys
  /** the socket of an upgrade whose token was valid; `request.principal` is set */
  onSocket: (socket: WebSocket, request: FastifyRequest) => void
}

/**
 * A WebSocket route whose token comes in the `Authorization` header or, for browsers (whose
 * WebSocket cannot set headers), as `?token=`; it is checked before the upgrade, so a refusal is
 * a plain 401 JSON response.
 */
export function tokenWebSocketRoute (app: FastifyInstance, route: TokenWebSocketRoute): void {
  app.route({
    method: 'GET',
    url: route.url,
    config: { access: 'public' },
    schema: { summary: route.summary, tags: route.tags, hide: true },
    // a plain GET (no Upgrade) is told what this endpoint is, as JSON like every other error
    handler: async () => {
      throw new BkgError('upgrade_required', 426, `${route.url} is a WebSocket endpoint: connect with Upgrade: websocket`)
    },
    preValidation: async (request) => {
      const token = requestToken(request, true)
      if (token == null) throw new BkgError('unauthorized', 401, 'missing token: Authorization: Bearer <token> or ?token=<token>')
      const principal = principalOf(request, token, route.keys)
      if (principal == null) throw new BkgError('unauthorized', 401, 'invalid or expired token')
      request.principal = principal
    },
    // a refused upgrade's socket is destroyed after the answer (@fastify/websocket): say so, or a
    // keep-alive client sends its next request into the closed socket
    onSend: async (request, reply, payload) => {
      if (request.ws) reply.header('connection', 'close')
      return payload
    },
    wsHandler: route.onSocket
  })
}
