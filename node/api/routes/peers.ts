import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { PeerDirectory } from '../../peers/index.ts'

const PeerSchema = z.object({
  peerId: z.string(),
  name: z.string(),
  roles: z.array(z.string()),
  namespaces: z.array(z.string()),
  addrs: z.array(z.string()),
  connection: z.object({
    direction: z.enum(['inbound', 'outbound']),
    transport: z.enum(['direct', 'relayed']),
    remoteAddr: z.string(),
    openedAt: z.string()
  }),
  latencyMs: z.number().nullable()
})

const DialBody = z.object({
  peerId: z.string().min(1).max(128).optional(),
  addr: z.string().min(1).max(1024).optional()
}).strict().refine((body) => body.peerId != null || body.addr != null, { message: 'give peerId, addr, or both' })

const DialResult = z.object({
  peerId: z.string(),
  name: z.string().nullable(),
  via: z.enum(['connected', 'address', 'peer-store', 'dht']),
  /** of the connection the dial produced; a relayed one may later be upgraded to direct (DCUtR) */
  transport: z.enum(['direct', 'relayed']),
  remoteAddr: z.string(),
  addrs: z.array(z.string()),
  elapsedMs: z.number()
})

export const peerRoutes: FastifyPluginAsyncZod<{ peers: PeerDirectory }> = async (app, { peers }) => {
  app.get('/api/v1/peers', {
    config: { access: 'token' },
    schema: {
      summary: 'Admitted peers with an open connection',
      tags: ['peers'],
      querystring: z.object({ ping: z.enum(['true', 'false']).default('true') }),
      response: { 200: z.array(PeerSchema) }
    }
  }, async (request) => await peers.list(request.query.ping === 'true'))

  app.post('/api/v1/peers/dial', {
    config: { access: 'admin' },
    schema: {
      summary: 'Connect to a peer by multiaddr, or by PeerId (looked up in the DHT when no address is known)',
      tags: ['peers'],
      body: DialBody,
      response: { 200: DialResult }
    }
  }, async (request) => await peers.dial(request.body))

  app.get('/api/v1/peers/:peerId/lookup', {
    config: { access: 'token' },
    schema: {
      summary: 'Ask the DHT (never the local cache) where a peer is',
      tags: ['peers'],
      params: z.object({ peerId: z.string().min(1).max(128) }),
      response: { 200: z.object({ peerId: z.string(), addrs: z.array(z.string()), answeredBy: z.string(), elapsedMs: z.number() }) }
    }
  }, async (request) => await peers.lookup(request.params.peerId))

  app.delete('/api/v1/peers/:peerId', {
    config: { access: 'admin' },
    schema: {
      summary: 'Close every connection to a peer (it may reconnect; revoke its certificate to keep it out)',
      tags: ['peers'],
      params: z.object({ peerId: z.string().min(1).max(128) }),
      response: { 200: z.object({ peerId: z.string(), closed: z.number() }) }
    }
  }, async (request) => ({ peerId: request.params.peerId, closed: await peers.hangUp(request.params.peerId) }))
}
