import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'

export const NodeInfoSchema = z.object({
  peerId: z.string(),
  name: z.string(),
  addrs: z.array(z.string()),
  cert: z.object({ roles: z.array(z.string()), namespaces: z.array(z.string()), notAfter: z.string(), serial: z.string() }),
  reachability: z.enum(['public', 'relayed', 'private', 'unknown']),
  addresses: z.array(z.object({ addr: z.string(), verified: z.boolean(), type: z.string() })),
  dht: z.object({ routingTableSize: z.number() }),
  version: z.string()
})

/** What the node tells about itself; the composition root provides it. */
export interface NodeStatus {
  readonly peerId: string
  info: () => z.infer<typeof NodeInfoSchema>
  databaseStatus: () => object
}

export const nodeRoutes: FastifyPluginAsyncZod<{ status: NodeStatus }> = async (app, { status }) => {
  app.get('/api/v1/node', {
    config: { access: 'token' },
    schema: {
      summary: 'This node: identity, addresses, certificate, reachability',
      tags: ['node'],
      response: { 200: NodeInfoSchema }
    }
  }, async () => status.info())

  app.get('/api/v1/admin/db', {
    config: { access: 'admin' },
    schema: {
      summary: 'The embedded database: open or not, central sync (state, cursor, rows synced, last error), change stream, psql command',
      tags: ['node']
    }
  }, async () => status.databaseStatus())
}
