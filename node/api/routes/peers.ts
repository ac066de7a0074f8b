import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { BkgNode } from '../../create-node.ts'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { RouteDeps } from '../server.ts'

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

export const peerRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, { node }) => {
  app.get('/api/v1/peers', {
    config: { access: 'token' },
    schema: {
      summary: 'Admitted peers with an open connection',
      tags: ['peers'],
      querystring: z.object({ ping: z.enum(['true', 'false']).default('true') }),
      response: { 200: z.array(PeerSchema) }
    }
  }, async (request) => await listPeers(node(), request.query.ping === 'true'))

  app.post('/api/v1/peers/dial', {
    config: { access: 'admin' },
    schema: {
      summary: 'Connect to a peer by multiaddr, or by PeerId (looked up in the DHT when no address is known)',
      tags: ['peers'],
      body: DialBody,
      response: { 200: DialResult }
    }
  }, async (request) => await dial(node(), request.body))

  app.get('/api/v1/peers/:peerId/lookup', {
    config: { access: 'token' },
    schema: {
      summary: 'Ask the DHT (never the local cache) where a peer is',
      tags: ['peers'],
      params: z.object({ peerId: z.string().min(1).max(128) }),
      response: { 200: z.object({ peerId: z.string(), addrs: z.array(z.string()), answeredBy: z.string(), elapsedMs: z.number() }) }
    }
  }, async (request) => await lookup(node(), parsePeerId(request.params.peerId)))

  app.delete('/api/v1/peers/:peerId', {
    config: { access: 'admin' },
    schema: {
      summary: 'Close every connection to a peer (it may reconnect; revoke its certificate to keep it out)',
      tags: ['peers'],
      params: z.object({ peerId: z.string().min(1).max(128) }),
      response: { 200: z.object({ peerId: z.string(), closed: z.number() }) }
    }
  }, async (request) => {
    const peerId = parsePeerId(request.params.peerId)
    const closed = node().host.getConnections(peerId).length
    if (closed === 0) throw new BkgError('not_connected', 404, `no connection to ${request.params.peerId}`)
    await node().host.hangUp(peerId)
    return { peerId: peerId.toString(), closed }
  })
}

function parsePeerId (text: string): PeerId {
  try {
    return peerIdFromString(text)
  } catch {
    throw new BkgError('invalid_peer_id', 400, `"${text.slice(0, 80)}" is not a PeerId`)
  }
}

async function lookup (node: BkgNode, peerId: PeerId): Promise<{ peerId: string, addrs: string[], answeredBy: string, elapsedMs: number }> {
  const started = performance.now()
  try {
    for await (const event of node.host.services.dht.findPeer(peerId, { useCache: false, signal: AbortSignal.timeout(15_000) })) {
      if (event.name === 'FINAL_PEER') {
        return {
          peerId: peerId.toString(),
          addrs: event.peer.multiaddrs.map(String),
          answeredBy: event.from.toString(),
          elapsedMs: Math.round((performance.now() - started) * 100) / 100
        }
      }
    }
  } catch (err) {
    throw new BkgError('peer_not_found', 404, `the DHT does not know ${peerId.toString()}: ${(err as Error).message}`)
  }
  throw new BkgError('peer_not_found', 404, `the DHT does not know ${peerId.toString()}`)
}

async function listPeers (node: BkgNode, withPing: boolean): Promise<Array<z.infer<typeof PeerSchema>>> {
  const byPeer = new Map<string, Connection>()
  for (const connection of node.host.getConnections()) {
    const id = connection.remotePeer.toString()
    const known = byPeer.get(id)
    // prefer a direct connection over a relayed one when both exist
    if (known == null || (isRelayed(known) && !isRelayed(connection))) byPeer.set(id, connection)
  }
  return await Promise.all([...byPeer].flatMap(([id, connection]) => {
    const cert = node.peers.get(id)
    if (cert == null) return []
    return [(async () => ({
      peerId: id,
      name: cert.name,
      roles: cert.roles,
      namespaces: cert.namespaces,
      addrs: await peerAddrs(node, id),
      connection: {
        direction: connection.direction,
        transport: isRelayed(connection) ? 'relayed' as const : 'direct' as const,
        remoteAddr: connection.remoteAddr.toString(),
        openedAt: new Date(connection.timeline.open).toISOString()
      },
      latencyMs: withPing ? await pingMs(node, connection) : null
    }))()]
  }))
}

async function dial (node: BkgNode, body: z.infer<typeof DialBody>): Promise<z.infer<typeof DialResult>> {
  const started = performance.now()
  let target: Multiaddr | undefined
  let peer = body.peerId
  if (body.addr != null) {
    try {
      target = multiaddr(body.addr)
    } catch {
      throw new BkgError('invalid_multiaddr', 400, `"${body.addr}" is not a multiaddr`)
    }
    const embedded = target.getComponents().findLast((c) => c.name === 'p2p')?.value
    if (peer != null && embedded != null && embedded !== peer) throw new BkgError('invalid_request', 400, 'addr names a different peer than peerId')
    peer ??= embedded
  }
  let peerId: PeerId | undefined
  if (peer != null) {
    peerId = parsePeerId(peer)
    if (peerId.equals(node.host.peerId)) throw new BkgError('invalid_request', 400, 'that is this node\'s own PeerId')
  }

  let via: z.infer<typeof DialResult>['via'] = 'address'
  if (target == null && peerId != null) {
    if (node.host.getConnections(peerId).length > 0) {
      via = 'connected'
    } else {
      const known = await node.host.peerStore.get(peerId).catch(() => null)
      if (known != null && known.addresses.length > 0) {
        via = 'peer-store'
      } else {
        via = 'dht'
        try {
          const found = await node.host.peerRouting.findPeer(peerId, { signal: AbortSignal.timeout(15_000) })
          if (found.multiaddrs.length === 0) throw new Error('no addresses')
        } catch (err) {
          throw new BkgError('peer_not_found', 404, `no address for ${peer} in the peer store or the DHT (${(err as Error).message})`)
        }
      }
    }
  }

  let connection: Connection
  try {
    connection = await node.host.dial(target ?? peerId!, { signal: AbortSignal.timeout(15_000) })
  } catch (err) {
    const refusal = node.peers.denial(peer ?? '')
    if (refusal != null) throw new BkgError('peer_refused', 403, `${peer} was refused admission: ${refusal.code}: ${refusal.message}`)
    throw new BkgError('dial_failed', 502, `could not connect: ${(err as Error).message}`)
  }
  const id = connection.remotePeer.toString()
  return {
    peerId: id,
    name: node.peers.get(id)?.name ?? null,
    via,
    transport: isRelayed(connection) ? 'relayed' : 'direct',
    remoteAddr: connection.remoteAddr.toString(),
    addrs: await peerAddrs(node, id),
    elapsedMs: Math.round((performance.now() - started) * 100) / 100
  }
}

function isRelayed (connection: Connection): boolean {
  return connection.remoteAddr.toString().includes('/p2p-circuit')
}

async function peerAddrs (node: BkgNode, id: string): Promise<string[]> {
  const record = await node.host.peerStore.get(peerIdFromString(id)).catch(() => null)
  return (record?.addresses ?? []).map((address) => address.multiaddr.toString())
}

async function pingMs (node: BkgNode, connection: Connection): Promise<number | null> {
  try {
    return await node.host.services.ping.ping(connection.remotePeer, { signal: AbortSignal.timeout(1000) })
  } catch {
    return null
  }
}
