import type { Connection, PeerId } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { BkgError } from '../../lib/bkg-error.ts'
import { AdmittedPeers } from '../../node/admission/index.ts'
import { peerDirectory, type PeerDirectory, type PeerDirectoryComponents } from '../../node/peers/index.ts'
import { certificate, makePeerId } from '../pubsub/fake-gossipsub.ts'

type DhtEvent = { name: 'PEER_RESPONSE', from: PeerId } | { name: 'FINAL_PEER', from: PeerId, peer: { id: PeerId, multiaddrs: Multiaddr[] } }

function connection (remotePeer: PeerId, remoteAddr: string, direction: 'inbound' | 'outbound' = 'outbound', open = Date.UTC(2026, 0, 2, 3, 4, 5)): Connection {
  return { remotePeer, remoteAddr: multiaddr(remoteAddr), direction, timeline: { open } } as unknown as Connection
}

/** The host as the directory sees it: scripted connections, dials, peer store, peer routing, DHT and ping. */
class FakeHost {
  readonly peerId: PeerId
  connections: Connection[] = []
  records = new Map<string, Multiaddr[]>()
  dialled: Array<{ target: string, kind: 'multiaddr' | 'peerId' }> = []
  /** what a dial to a target (address or PeerId string) produces; anything else fails */
  answers = new Map<string, Connection>()
  routing = new Map<string, Multiaddr[]>()
  dhtEvents: DhtEvent[] = []
  dhtError?: Error
  dhtOptions: unknown[] = []
  latency = new Map<string, number>()
  hungUp: string[] = []

  constructor (peerId: PeerId) {
    this.peerId = peerId
  }

  getConnections = (peerId?: PeerId): Connection[] => peerId == null ? this.connections : this.connections.filter((c) => c.remotePeer.equals(peerId))

  dial = async (target: PeerId | Multiaddr, options: { signal: AbortSignal }): Promise<Connection> => {
    expect(options.signal).toBeInstanceOf(AbortSignal)
    const kind = 'getComponents' in target ? 'multiaddr' : 'peerId'
    this.dialled.push({ target: target.toString(), kind })
    const answer = this.answers.get(target.toString())
    if (answer == null) throw new Error('all dials failed')
    return answer
  }

  hangUp = async (peerId: PeerId): Promise<void> => {
    this.hungUp.push(peerId.toString())
    this.connections = this.connections.filter((c) => !c.remotePeer.equals(peerId))
  }

  peerStore = {
    get: async (peerId: PeerId) => {
      const addrs = this.records.get(peerId.toString())
      if (addrs == null) throw new Error('Not Found')
      return { id: peerId, addresses: addrs.map((addr) => ({ multiaddr: addr, isCertified: false })) }
    }
  }

  peerRouting = {
    findPeer: async (peerId: PeerId) => {
      const addrs = this.routing.get(peerId.toString())
      if (addrs == null) throw new Error('not found in routing')
      return { id: peerId, multiaddrs: addrs }
    }
  }

  services = {
    dht: {
      findPeer: (peerId: PeerId, options: unknown): AsyncIterable<DhtEvent> => {
        this.dhtOptions.push(options)
        const { dhtEvents, dhtError } = this
        return (async function * () {
          yield * dhtEvents
          if (dhtError != null) throw dhtError
        })()
      }
    },
    ping: {
      ping: async (peerId: PeerId, options: { signal: AbortSignal }): Promise<number> => {
        expect(options.signal).toBeInstanceOf(AbortSignal)
        const ms = this.latency.get(peerId.toString())
        if (ms == null) throw new Error('ping timed out')
        return ms
      }
    }
  }
}

async function refusal (promise: Promise<unknown>): Promise<BkgError> {
  const err = await promise.then(() => null, (e: unknown) => e)
  expect(err).toBeInstanceOf(BkgError)
  return err as BkgError
}

describe('PeerDirectory', () => {
  let self: PeerId
  let alice: PeerId
  let bob: PeerId
  let stranger: PeerId
  let host: FakeHost
  let peers: AdmittedPeers
  let directory: PeerDirectory

  const direct = (peer: PeerId, port = 4001): string => `/ip4/10.0.0.1/tcp/${port}/p2p/${peer.toString()}`
  const relayed = (peer: PeerId): string => `/ip4/10.0.0.7/tcp/4001/p2p/${stranger.toString()}/p2p-circuit/p2p/${peer.toString()}`

  beforeAll(async () => {
    [self, alice, bob, stranger] = await Promise.all([makePeerId(), makePeerId(), makePeerId(), makePeerId()])
  })

  beforeEach(() => {
    host = new FakeHost(self)
    peers = new AdmittedPeers()
    peers.admit(alice, certificate(alice, { name: 'alice', roles: ['member', 'relay'], namespaces: ['lab'] }))
    peers.admit(bob, certificate(bob, { name: 'bob' }))
    directory = peerDirectory({ dialTimeoutMs: 50, lookupTimeoutMs: 50, pingTimeoutMs: 50 })({
      host: host as unknown as PeerDirectoryComponents['host'],
      peers
    })
  })

  describe('list', () => {
    it('shows each admitted peer once, its direct connection preferred over a relayed one, and skips unadmitted peers', async () => {
      host.connections = [
        connection(alice, relayed(alice)),
        connection(alice, direct(alice), 'inbound'),
        connection(alice, relayed(alice)),
        connection(bob, relayed(bob)),
        connection(stranger, direct(stranger))
      ]
      host.records.set(alice.toString(), [multiaddr('/ip4/10.0.0.1/tcp/4001'), multiaddr('/ip4/10.0.0.1/udp/4001/quic-v1')])
      const list = await directory.list(false)

      expect(list.map((peer) => peer.peerId).sort()).toEqual([alice.toString(), bob.toString()].sort())
      const a = list.find((peer) => peer.peerId === alice.toString())!
      expect(a).toEqual({
        peerId: alice.toString(),
        name: 'alice',
        roles: ['member', 'relay'],
        namespaces: ['lab'],
        addrs: ['/ip4/10.0.0.1/tcp/4001', '/ip4/10.0.0.1/udp/4001/quic-v1'],
        connection: { direction: 'inbound', transport: 'direct', remoteAddr: direct(alice), openedAt: '2026-01-02T03:04:05.000Z' },
        latencyMs: null
      })
      const b = list.find((peer) => peer.peerId === bob.toString())!
      expect(b.connection.transport).toBe('relayed')
      expect(b.connection.remoteAddr).toBe(relayed(bob))
      expect(b.addrs).toEqual([])
    })

    it('pings when asked: a peer that does not answer has latencyMs null', async () => {
      host.connections = [connection(alice, direct(alice)), connection(bob, direct(bob))]
      host.latency.set(alice.toString(), 12.5)
      const list = await directory.list(true)
      expect(Object.fromEntries(list.map((peer) => [peer.name, peer.latencyMs]))).toEqual({ alice: 12.5, bob: null })
    })

    it('is empty without connections', async () => {
      expect(await directory.list(true)).toEqual([])
    })
  })

  describe('dial', () => {
    it('by address: dials the multiaddr and reports the connection', async () => {
      host.answers.set(direct(alice), connection(alice, direct(alice)))
      host.records.set(alice.toString(), [multiaddr('/ip4/10.0.0.1/tcp/4001')])
      const result = await directory.dial({ addr: direct(alice) })
      expect(host.dialled).toEqual([{ target: direct(alice), kind: 'multiaddr' }])
      expect(result).toMatchObject({
        peerId: alice.toString(),
        name: 'alice',
        via: 'address',
        transport: 'direct',
        remoteAddr: direct(alice),
        addrs: ['/ip4/10.0.0.1/tcp/4001']
      })
      expect(result.elapsedMs).toBeGreaterThanOrEqual(0)
    })

    it('by address and the same peerId: the address is dialled; an unadmitted peer has name null; a relayed one says so', async () => {
      host.answers.set(relayed(stranger), connection(stranger, relayed(stranger)))
      const result = await directory.dial({ addr: relayed(stranger), peerId: stranger.toString() })
      expect(host.dialled).toEqual([{ target: relayed(stranger), kind: 'multiaddr' }])
      expect(result).toMatchObject({ peerId: stranger.toString(), name: null, via: 'address', transport: 'relayed' })
    })

    it('by peerId, already connected: via connected', async () => {
      host.connections = [connection(alice, direct(alice))]
      host.answers.set(alice.toString(), connection(alice, direct(alice)))
      const result = await directory.dial({ peerId: alice.toString() })
      expect(result.via).toBe('connected')
      expect(host.dialled).toEqual([{ target: alice.toString(), kind: 'peerId' }])
    })

    it('by peerId, known to the peer store: via peer-store', async () => {
      host.records.set(bob.toString(), [multiaddr('/ip4/10.0.0.2/tcp/4001')])
      host.routing.set(bob.toString(), [multiaddr('/ip4/10.0.0.2/tcp/4001')])
      host.answers.set(bob.toString(), connection(bob, direct(bob)))
      expect((await directory.dial({ peerId: bob.toString() })).via).toBe('peer-store')
    })

    it('by peerId, with an empty peer-store record, found by peer routing: via dht', async () => {
      host.records.set(bob.toString(), [])
      host.routing.set(bob.toString(), [multiaddr('/ip4/10.0.0.2/tcp/4001')])
      host.answers.set(bob.toString(), connection(bob, direct(bob)))
      const result = await directory.dial({ peerId: bob.toString() })
      expect(result).toMatchObject({ peerId: bob.toString(), name: 'bob', via: 'dht' })
    })

    it('by peerId, found nowhere: peer_not_found 404 and no dial', async () => {
      const err = await refusal(directory.dial({ peerId: bob.toString() }))
      expect([err.code, err.status]).toEqual(['peer_not_found', 404])
      expect(err.message).toContain('not found in routing')
      expect(host.dialled).toEqual([])
    })

    it('by peerId, routing answers without addresses: peer_not_found', async () => {
      host.routing.set(bob.toString(), [])
      const err = await refusal(directory.dial({ peerId: bob.toString() }))
      expect([err.code, err.status]).toEqual(['peer_not_found', 404])
      expect(err.message).toContain('no addresses')
    })

    it('refuses what is not a multiaddr: invalid_multiaddr 400', async () => {
      const err = await refusal(directory.dial({ addr: 'not/a/multiaddr' }))
      expect([err.code, err.status]).toEqual(['invalid_multiaddr', 400])
      expect(host.dialled).toEqual([])
    })

    it('refuses an addr that names a different peer than peerId', async () => {
      const err = await refusal(directory.dial({ addr: direct(alice), peerId: bob.toString() }))
      expect([err.code, err.status, err.message]).toEqual(['invalid_request', 400, 'addr names a different peer than peerId'])
      expect(host.dialled).toEqual([])
    })

    it('refuses its own PeerId, given directly or inside an address', async () => {
      for (const target of [{ peerId: self.toString() }, { addr: direct(self) }]) {
        const err = await refusal(directory.dial(target))
        expect([err.code, err.status, err.message]).toEqual(['invalid_request', 400, 'that is this node\'s own PeerId'])
      }
      expect(host.dialled).toEqual([])
    })

    it('refuses a malformed peerId and an empty target', async () => {
      const bad = await refusal(directory.dial({ peerId: 'not-a-peer-id' }))
      expect([bad.code, bad.status]).toEqual(['invalid_peer_id', 400])
      const empty = await refusal(directory.dial({}))
      expect([empty.code, empty.status]).toEqual(['invalid_request', 400])
    })

    it('a failed dial to a peer admission refused: peer_refused 403 with the denial', async () => {
      peers.deny(stranger, { code: 'cert_expired', message: 'certificate expired on 2026-01-01' }, 60_000)
      const err = await refusal(directory.dial({ addr: direct(stranger) }))
      expect([err.code, err.status]).toEqual(['peer_refused', 403])
      expect(err.message).toBe(`${stranger.toString()} was refused admission: cert_expired: certificate expired on 2026-01-01`)
    })

    it('any other failed dial: dial_failed 502 with the cause', async () => {
      const err = await refusal(directory.dial({ addr: direct(bob) }))
      expect([err.code, err.status]).toEqual(['dial_failed', 502])
      expect(err.message).toBe('could not connect: all dials failed')
      // a dial to an address without /p2p has no peer to look up a denial for
      const bare = await refusal(directory.dial({ addr: '/ip4/10.0.0.3/tcp/4001' }))
      expect([bare.code, bare.status]).toEqual(['dial_failed', 502])
    })
  })

  describe('lookup', () => {
    it('answers with the FINAL_PEER event: its addresses and who answered, never from the cache', async () => {
      host.dhtEvents = [
        { name: 'PEER_RESPONSE', from: stranger },
        { name: 'FINAL_PEER', from: alice, peer: { id: bob, multiaddrs: [multiaddr('/ip4/10.0.0.2/tcp/4001'), multiaddr('/ip4/10.0.0.2/tcp/4002')] } },
        { name: 'FINAL_PEER', from: stranger, peer: { id: bob, multiaddrs: [multiaddr('/ip4/10.0.0.9/tcp/1')] } }
      ]
      const result = await directory.lookup(bob.toString())
      expect(result).toMatchObject({ peerId: bob.toString(), addrs: ['/ip4/10.0.0.2/tcp/4001', '/ip4/10.0.0.2/tcp/4002'], answeredBy: alice.toString() })
      expect(result.elapsedMs).toBeGreaterThanOrEqual(0)
      expect(host.dhtOptions).toEqual([expect.objectContaining({ useCache: false, signal: expect.any(AbortSignal) })])
    })

    it('a query that ends without FINAL_PEER: peer_not_found 404', async () => {
      host.dhtEvents = [{ name: 'PEER_RESPONSE', from: stranger }]
      const err = await refusal(directory.lookup(bob.toString()))
      expect([err.code, err.status, err.message]).toEqual(['peer_not_found', 404, `the DHT does not know ${bob.toString()}`])
    })

    it('a query that fails: peer_not_found 404 with the cause', async () => {
      host.dhtError = new Error('query aborted')
      const err = await refusal(directory.lookup(bob.toString()))
      expect([err.code, err.status, err.message]).toEqual(['peer_not_found', 404, `the DHT does not know ${bob.toString()}: query aborted`])
    })

    it('refuses a malformed PeerId', async () => {
      expect((await refusal(directory.lookup('12D3KooWnope'))).code).toBe('invalid_peer_id')
    })
  })

  describe('hangUp', () => {
    it('closes every connection to the peer and says how many there were', async () => {
      host.connections = [connection(alice, direct(alice)), connection(alice, relayed(alice)), connection(bob, direct(bob))]
      expect(await directory.hangUp(alice.toString())).toBe(2)
      expect(host.hungUp).toEqual([alice.toString()])
      expect(host.connections.map((c) => c.remotePeer.toString())).toEqual([bob.toString()])
    })

    it('a peer without a connection: not_connected 404, nothing hung up', async () => {
      host.connections = [connection(bob, direct(bob))]
      const err = await refusal(directory.hangUp(alice.toString()))
      expect([err.code, err.status]).toEqual(['not_connected', 404])
      expect(host.hungUp).toEqual([])
    })

    it('refuses a malformed PeerId', async () => {
      expect((await refusal(directory.hangUp('nope'))).code).toBe('invalid_peer_id')
    })
  })
})
