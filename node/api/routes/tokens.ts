import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { createNamespaceToken, parseDuration, TOKEN_ROLES } from '../../auth/index.ts'
import type { ApiKeys } from '../auth.ts'

export const tokenRoutes: FastifyPluginAsyncZod<{ keys: ApiKeys }> = async (app, { keys }) => {
  app.post('/api/v1/tokens', {
    config: { access: 'admin' },
    schema: {
      summary: 'Issue a namespace-scoped API token',
      tags: ['auth'],
      body: z.object({
        namespace: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'namespace: lowercase letters, digits, . _ -'),
        role: z.enum(TOKEN_ROLES).default('reader'),
        ttl: z.string().default('30d')
      }).strict(),
      response: {
        200: z.object({ token: z.string(), namespace: z.string(), role: z.enum(TOKEN_ROLES), expiresAt: z.string().nullable() })
      }
    }
  }, async (request) => {
    const { token, principal } = createNamespaceToken(keys.secret, {
      namespace: request.body.namespace,
      role: request.body.role,
      ttlMs: parseDuration(request.body.ttl)
    })
    return {
      token,
      namespace: principal.namespace,
      role: principal.role,
      expiresAt: principal.expiresAt == null ? null : new Date(principal.expiresAt).toISOString()
    }
  })
}
