import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { RevocationService } from '../../revocation/index.ts'

export const crlRoutes: FastifyPluginAsyncZod<{ revocation: RevocationService }> = async (app, { revocation }) => {
  app.get('/api/v1/admin/crl', {
    config: { access: 'token' },
    schema: {
      summary: 'The newest CA-signed CRL this node honours',
      tags: ['admission'],
      response: { 200: z.object({ number: z.string().nullable(), revoked: z.array(z.string()), pem: z.string().nullable() }) }
    }
  }, async () => revocation.current())

  app.post('/api/v1/admin/crl', {
    config: { access: 'admin' },
    schema: {
      summary: 'Adopt a CA-signed CRL, drop the peers it revokes and spread it through the mesh (admin nodes only)',
      tags: ['admission'],
      body: z.object({ pem: z.string().min(1).max(512 * 1024) }).strict(),
      response: {
        200: z.object({ number: z.string(), revoked: z.number(), dropped: z.array(z.string()), recipients: z.number() })
      }
    }
  }, async (request) => await revocation.publish(request.body.pem))
}
