import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { RouteDeps } from '../server.ts'

export const crlRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, { node }) => {
  app.get('/api/v1/admin/crl', {
    config: { access: 'token' },
    schema: {
      summary: 'The newest CA-signed CRL this node honours',
      tags: ['admission'],
      response: { 200: z.object({ number: z.string().nullable(), revoked: z.array(z.string()), pem: z.string().nullable() }) }
    }
  }, async () => {
    const crl = node().trust.crl
    return { number: crl?.number.toString() ?? null, revoked: crl == null ? [] : [...crl.revoked.keys()], pem: crl?.pem ?? null }
  })

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
  }, async (request) => await node().revocation.publish(request.body.pem))
}
