import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { KEEP_ALIVE, type PeerId } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { bootstrapper, type Bootstrapper, type BootstrapperComponents, type BootstrapperInit } from '../../node/p2p/index.ts'
import { BOOTSTRAP_RETRY_MAX_MS, BOOTSTRAP_RETRY_MIN_MS, BOOTSTRAP_TAG, BOOTSTRAP_TAG_VALUE } from '../../node/p2p/constants.ts'
import { makePeerId } from '../pubsub/fake-gossipsub.ts'

/** A host that answers dials from a table of reachable addresses and keeps its own peer store. */
class FakeHost {
  readonly peerId: PeerId
  connections: Array<{ remotePeer: PeerId }> = []
  /** address → the peer that answers there; any other address refuses */
  reachable = new Map<string, PeerId>()
  dials: Array<{ addr: string, at: number }> = []
  merged: Array<{ peerId: string, multiaddrs: string[], tags: unknown }> = []
  records = new Map<string, Multiaddr[]>()

  constructor (peerId: PeerId) {
    this.peerId = peerId
  }

  getConnections = (): Array<{ remotePeer: PeerId }> => this.connections

  dial = async (addr: Multiaddr, options: { signal: AbortSignal }): Promise<{ remotePeer: PeerId }> => {
    expect(options.signal).toBeInstanceOf(AbortSignal)
    this.dials.push({ addr: addr.toString(), at: Date.now() })
    const peer = this.reachable.get(addr.toString())
    if (peer == null) throw new Error('connection refused')
    this.connections.push({ remotePeer: peer })
    return { remotePeer: peer }
  }

  peerStore = {
    merge: async (peerId: PeerId, data: { multiaddrs?: Multiaddr[], tags?: unknown }): Promise<void> => {
      this.merged.push({ peerId: peerId.toString(), multiaddrs: (data.multiaddrs ?? []).map(String), tags: data.tags })
    },
    get: async (peerId: PeerId): Promise<{ addresses: Array<{ multiaddr: Multiaddr }> }> => {
      const addrs = this.records.get(peerId.toString())
      if (addrs == null) throw new Error('Not Found')
      return { addresses: addrs.map((addr) => ({ multiaddr: addr })) }
    }
  }
}

class RecordingLog {
  lines: Array<{ level: string, obj: Record<string, unknown>, msg: string }> = []
  info (...args: unknown[]): void { this.record('info', args) }
  warn (...args: unknown[]): void { this.record('warn', args) }
  debug (...args: unknown[]): void { this.record('debug', args) }
  private record (level: string, [obj, msg]: unknown[]): void {
    this.lines.push({ level, obj: obj as Record<string, unknown>, msg: msg as string })
  }

  at (level: string): Array<{ obj: Record<string, unknown>, msg: string }> {
    return this.lines.filter((line) => line.level === level).map(({ obj, msg }) => ({ obj, msg }))
  }
}

describe('Bootstrapper', () => {
  let self: PeerId
  let alice: PeerId
  let bob: PeerId
  let carol: PeerId
  let dir: string
  let cachePath: string
  let host: FakeHost
  let log: RecordingLog
  let running: Bootstrapper[]

  const aliceAddr = (): Multiaddr => multiaddr(`/ip4/10.0.0.1/tcp/4001/p2p/${alice.toString()}`)
  const bobAddr = (): Multiaddr => multiaddr(`/ip4/10.0.0.2/tcp/4001/p2p/${bob.toString()}`)

  function make (init: Partial<BootstrapperInit> & Pick<BootstrapperInit, 'addrs'>): Bootstrapper {
    const service = bootstrapper({ peerCachePath: cachePath, ...init })({ host, log } satisfies BootstrapperComponents)
    running.push(service)
    return service
  }

  /** the time of each retry round's first dial, relative to the end of start() */
  function rounds (since: number): number[] {
    return [...new Set(host.dials.map((dial) => dial.at))].filter((at) => at > since).map((at) => at - since)
  }

  beforeAll(async () => {
    [self, alice, bob, carol] = await Promise.all([makePeerId(), makePeerId(), makePeerId(), makePeerId()])
  })

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bkg-bootstrapper-'))
    cachePath = join(dir, 'peer-cache.json')
    host = new FakeHost(self)
    log = new RecordingLog()
    running = []
  })

  afterEach(async () => {
    vi.useRealTimers()
    for (const service of running) await service.stop().catch(() => {}) // a test may remove the dir first
    await rm(dir, { recursive: true, force: true })
  })

  describe('start', () => {
    it('dials every bootstrap address, tags those naming a peer keep-alive, and skips its own', async () => {
      const bare = multiaddr('/dns4/boot.example/tcp/4001')
      const own = multiaddr(`/ip4/10.0.0.9/tcp/4001/p2p/${self.toString()}`)
      host.reachable.set(aliceAddr().toString(), alice)
      host.reachable.set(bare.toString(), bob)
      await make({ addrs: [aliceAddr(), bobAddr(), bare, own] }).start()

      expect(host.dials.map((dial) => dial.addr).sort()).toEqual([aliceAddr(), bobAddr(), bare].map(String).sort())
      expect(host.merged).toHaveLength(2)
      for (const [peer, addr] of [[alice, aliceAddr()], [bob, bobAddr()]] as const) {
        expect(host.merged).toContainEqual({
          peerId: peer.toString(),
          multiaddrs: [addr.toString()],
          tags: { [BOOTSTRAP_TAG]: { value: BOOTSTRAP_TAG_VALUE }, [KEEP_ALIVE]: { value: 1 } }
        })
      }
      expect(log.at('info').map((line) => line.obj.peer).sort()).toEqual([alice.toString(), bob.toString()].sort())
      expect(log.at('warn')).toEqual([{ obj: { addr: bobAddr().toString(), err: 'connection refused' }, msg: 'bootstrap dial failed; will retry' }])
    })

    it('resolves (does not throw) when every dial fails', async () => {
      await expect(make({ addrs: [aliceAddr(), bobAddr()] }).start()).resolves.toBeUndefined()
      expect(host.dials).toHaveLength(2)
      expect(log.at('warn')).toHaveLength(2)
    })
  })

  describe('retries', () => {
    it('backs off from the default minimum, doubling up to the default maximum, while there is no connection', async () => {
      vi.useFakeTimers()
      const service = make({ addrs: [aliceAddr(), bobAddr()] })
      await service.start()
      const started = Date.now()
      await vi.advanceTimersByTimeAsync(200_000)

      const expected: number[] = []
      let delay = BOOTSTRAP_RETRY_MIN_MS
      for (let at = delay; at <= 200_000; at += delay) {
        expected.push(at)
        delay = Math.min(delay * 2, BOOTSTRAP_RETRY_MAX_MS)
      }
      expect(expected.slice(0, 7)).toEqual([1000, 3000, 7000, 15_000, 31_000, 61_000, 91_000])
      expect(rounds(started)).toEqual(expected)
      // both addresses in every round; a retry round logs no warnings
      expect(host.dials).toHaveLength(2 * (expected.length + 1))
      expect(log.at('warn')).toHaveLength(2)
    })

    it('takes retryMinMs and retryMaxMs from its Init', async () => {
      vi.useFakeTimers()
      await make({ addrs: [aliceAddr()], retryMinMs: 100, retryMaxMs: 500 }).start()
      const started = Date.now()
      await vi.advanceTimersByTimeAsync(2500)
      expect(rounds(started)).toEqual([100, 300, 700, 1200, 1700, 2200])
    })

    it('stops retrying once connected, and starts again from the minimum when the connections drop', async () => {
      vi.useFakeTimers()
      await make({ addrs: [aliceAddr()], retryMinMs: 100, retryMaxMs: 10_000 }).start()
      const started = Date.now()
      await vi.advanceTimersByTimeAsync(100) // round 1 at 100 fails; next wait 200
      host.reachable.set(aliceAddr().toString(), alice)
      await vi.advanceTimersByTimeAsync(200) // round 2 at 300 connects
      expect(host.connections).toHaveLength(1)
      await vi.advanceTimersByTimeAsync(60_000)
      expect(rounds(started)).toEqual([100, 300])

      host.connections = []
      host.reachable.clear()
      const dropped = Date.now()
      await vi.advanceTimersByTimeAsync(1000)
      // while connected the wait was reset to the minimum: a round within 100 ms, then 200, 400 (not 800, 1600)
      const after = rounds(dropped)
      expect(after.length).toBeGreaterThanOrEqual(3)
      expect(after[0]).toBeLessThanOrEqual(100)
      expect(after[1] - after[0]).toBe(200)
      expect(after[2] - after[1]).toBe(400)
    })

    it('does not retry when the bootstrap list is empty', async () => {
      vi.useFakeTimers()
      await make({ addrs: [] }).start()
      await vi.advanceTimersByTimeAsync(120_000)
      expect(host.dials).toEqual([])
    })

    it('stops retrying on stop', async () => {
      vi.useFakeTimers()
      const service = make({ addrs: [aliceAddr()], retryMinMs: 100 })
      await service.start()
      await vi.advanceTimersByTimeAsync(100)
      expect(host.dials).toHaveLength(2)
      await service.stop()
      await vi.advanceTimersByTimeAsync(120_000)
      expect(host.dials).toHaveLength(2)
    })
  })

  describe('peer cache', () => {
    it('writes the connected peers at stop: deduplicated, relayed and extra addresses dropped, /p2p added, peers without addresses left out', async () => {
      const aliceAddrs = [
        multiaddr('/ip4/10.0.0.1/tcp/4001'),
        multiaddr(`/ip4/10.0.0.5/tcp/4001/p2p/${bob.toString()}/p2p-circuit`),
        multiaddr(`/ip4/10.0.0.1/tcp/4002/p2p/${alice.toString()}`),
        multiaddr('/ip4/10.0.0.1/tcp/4003'),
        multiaddr('/ip4/10.0.0.1/tcp/4004'),
        multiaddr('/ip4/10.0.0.1/tcp/4005')
      ]
      host.records.set(alice.toString(), aliceAddrs)
      host.records.set(bob.toString(), [])
      // carol has no peer-store record at all
      host.connections = [{ remotePeer: alice }, { remotePeer: alice }, { remotePeer: bob }, { remotePeer: carol }]
      const service = make({ addrs: [] })
      await service.start()
      await service.stop()

      const written = JSON.parse(await readFile(cachePath, 'utf8'))
      expect(written).toEqual({
        version: 1,
        peers: [{
          peerId: alice.toString(),
          addrs: [
            `/ip4/10.0.0.1/tcp/4001/p2p/${alice.toString()}`,
            `/ip4/10.0.0.1/tcp/4002/p2p/${alice.toString()}`,
            `/ip4/10.0.0.1/tcp/4003/p2p/${alice.toString()}`,
            `/ip4/10.0.0.1/tcp/4004/p2p/${alice.toString()}`
          ]
        }]
      })
    })

    it('keeps at most cacheMaxPeers peers and cacheAddrsPerPeer addresses', async () => {
      for (const peer of [alice, bob, carol]) host.records.set(peer.toString(), [multiaddr('/ip4/10.0.0.1/tcp/1'), multiaddr('/ip4/10.0.0.1/tcp/2')])
      host.connections = [{ remotePeer: alice }, { remotePeer: bob }, { remotePeer: carol }]
      const service = make({ addrs: [], cacheMaxPeers: 2, cacheAddrsPerPeer: 1 })
      await service.stop()
      const written = JSON.parse(await readFile(cachePath, 'utf8'))
      expect(written.peers).toEqual([
        { peerId: alice.toString(), addrs: [`/ip4/10.0.0.1/tcp/1/p2p/${alice.toString()}`] },
        { peerId: bob.toString(), addrs: [`/ip4/10.0.0.1/tcp/1/p2p/${bob.toString()}`] }
      ])
    })

    it('dials the cached peers at the next start (the first addresses of each), without tagging them', async () => {
      const carolAddrs = [1, 2, 3, 4, 5].map((port) => `/ip4/10.0.0.3/tcp/${port}/p2p/${carol.toString()}`)
      await writeFile(cachePath, JSON.stringify({ version: 1, peers: [{ peerId: carol.toString(), addrs: carolAddrs }] }))
      host.reachable.set(carolAddrs[0], carol)
      await make({ addrs: [aliceAddr()] }).start()

      expect(host.dials.map((dial) => dial.addr).sort()).toEqual([aliceAddr().toString(), ...carolAddrs.slice(0, 4)].sort())
      expect(host.merged.map((merge) => merge.peerId)).toEqual([alice.toString()])
      expect(log.at('info').map((line) => line.obj.peer)).toEqual([carol.toString()])
    })

    it('round-trips: what one run writes, the next run dials', async () => {
      host.records.set(bob.toString(), [multiaddr('/ip4/10.0.0.2/tcp/4001')])
      host.connections = [{ remotePeer: bob }]
      const first = make({ addrs: [] })
      await first.start()
      await first.stop()

      host = new FakeHost(self)
      await make({ addrs: [] }).start()
      expect(host.dials.map((dial) => dial.addr)).toEqual([`/ip4/10.0.0.2/tcp/4001/p2p/${bob.toString()}`])
    })

    for (const [what, content] of [
      ['not JSON', '{"version": 1, "peers": ['],
      ['the wrong version', JSON.stringify({ version: 2, peers: [] })],
      ['a bad multiaddr', JSON.stringify({ version: 1, peers: [{ peerId: 'x', addrs: ['not a multiaddr'] }] })]
    ] as const) {
      it(`ignores a corrupt cache (${what}) and writes a good one at stop`, async () => {
        await writeFile(cachePath, content)
        host.records.set(alice.toString(), [multiaddr('/ip4/10.0.0.1/tcp/4001')])
        host.reachable.set(aliceAddr().toString(), alice)
        const service = make({ addrs: [aliceAddr()] })
        await expect(service.start()).resolves.toBeUndefined()
        expect(host.dials.map((dial) => dial.addr)).toEqual([aliceAddr().toString()])
        expect(log.at('debug').map((line) => line.msg)).toEqual(['no usable peer cache'])

        await service.stop()
        const written = JSON.parse(await readFile(cachePath, 'utf8'))
        expect(written).toEqual({ version: 1, peers: [{ peerId: alice.toString(), addrs: [aliceAddr().toString()] }] })
      })
    }

    it('starts without a cache file (a first start)', async () => {
      await make({ addrs: [aliceAddr()] }).start()
      expect(host.dials).toHaveLength(1)
      expect(log.at('debug')).toHaveLength(1)
    })
  })
})
