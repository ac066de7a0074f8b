import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initCa } from '../../ca/index.ts'
import { pubsubTopic } from '../../protocols/ids.ts'
import { peerIdsOf, subscribeTopic, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'
import { createStockPeer } from '../helpers/stock-peer.ts'

describe('peers without a valid certificate', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let a: TestNode
  let b: TestNode

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    a = await mesh.addNode('alpha', { roles: ['bootstrap', 'admin', 'member'] })
    await a.start()
    b = await mesh.addNode('beta', { args: ['--bootstrap', a.addrs[0]] })
    await b.start()
    await waitFor('beta admitted', async () => (await peerIdsOf(a)).includes(b.peerId))
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('a node certified by another CA is never admitted, in either direction', async () => {
    const foreignCa = `${tmp.dir}/foreign-ca`
    await initCa(foreignCa, { name: 'Rogue Operator' })
    const rogue = await mesh.addNode('rogue', { caDir: foreignCa, args: ['--bootstrap', a.addrs[0]] })
    await rogue.start()
    const dialOut = await a.api('POST', '/api/v1/peers/dial', { addr: rogue.addrs[0] })
    expect(dialOut.status).toBeGreaterThanOrEqual(400)
    await new Promise((resolve) => setTimeout(resolve, 1500))
    expect(await peerIdsOf(a)).not.toContain(rogue.peerId)
    expect(await peerIdsOf(rogue)).toEqual([])
    const metrics = await a.api('GET', '/metrics')
    expect(metrics.body).toMatch(/bkg_admissions_total\{result="rejected",code="cert_untrusted"\} [1-9]/)
    await rogue.stop()
  })

  it('a stock libp2p peer without a certificate gets nothing: disconnected, no DHT, no gossip, gated', async () => {
    const intruder = await createStockPeer()
    await intruder.start()
    try {
      const sub = await subscribeTopic(a, 'secret')
      intruder.services.pubsub.subscribe(pubsubTopic('secret'))
      const target = multiaddr(a.addrs[0])
      const started = Date.now()
      let connectionSurvived = false
      try {
        const connection = await intruder.dial(target, { signal: AbortSignal.timeout(8000) })
        // the upgrade may complete on the intruder's side before alpha's verdict arrives
        await waitFor('intruder disconnected', async () => connection.status !== 'open', 5000, 50)
      } catch {
        // refused during the upgrade: the expected outcome
      }
      connectionSurvived = intruder.getConnections().some((c) => c.status === 'open')
      expect(connectionSurvived).toBe(false)
      expect(Date.now() - started).toBeLessThan(5500)

      // nothing learned: no routing table entry either way, no DHT answer
      expect((intruder.services.dht as any).routingTable.size).toBe(0)
      const info = await a.api('GET', '/api/v1/node')
      expect(info.body.dht.routingTableSize).toBe(1) // only beta
      await expect(intruder.peerRouting.findPeer(peerIdFromString(b.peerId), { signal: AbortSignal.timeout(3000) })).rejects.toThrow()
      await intruder.services.pubsub.publish(pubsubTopic('secret'), new TextEncoder().encode('let me in')).catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 1000))
      expect(sub.messages).toEqual([])
      sub.close()

      // gated: a redial is refused straight away
      const redialStarted = Date.now()
      await expect(intruder.dial(target, { signal: AbortSignal.timeout(8000) }).then(async (c) => {
        await waitFor('closed', async () => c.status !== 'open', 5000, 50)
        throw new Error('closed')
      })).rejects.toThrow()
      expect(Date.now() - redialStarted).toBeLessThan(5500)
      expect(await peerIdsOf(a)).toEqual([b.peerId])
      const metrics = await a.api('GET', '/metrics')
      expect(metrics.body).toMatch(/bkg_admissions_total\{result="rejected",code="[a-z_]+"\} [2-9]/)
    } finally {
      await intruder.stop()
    }
  })

  it('a flood of certless dials does not starve admitted peers', async () => {
    const intruders = await Promise.all(Array.from({ length: 24 }, async () => await createStockPeer()))
    await Promise.all(intruders.map(async (peer) => await peer.start()))
    const sub = await subscribeTopic(b, 'during-flood')
    try {
      const target = multiaddr(a.addrs[0])
      const flood = Promise.allSettled(intruders.flatMap((peer) => Array.from({ length: 4 }, async () => await peer.dial(target, { signal: AbortSignal.timeout(8000) }))))
      // while the flood runs, a new certified node joins and gossip flows between admitted peers
      const gamma = await mesh.addNode('gamma', { args: ['--bootstrap', a.addrs[0]] })
      await gamma.start()
      await waitFor('gamma admitted during the flood', async () => (await peerIdsOf(a)).includes(gamma.peerId), 15_000)
      await subscribeTopic(a, 'during-flood')
      await new Promise((resolve) => setTimeout(resolve, 1500))
      await a.api('POST', '/api/v1/pubsub/topics/during-flood/messages', { data: 'still here' })
      await waitFor('gossip during the flood', async () => sub.messages.some((m) => m.data === 'still here'), 10_000)
      await flood
      const peers = await peerIdsOf(a)
      expect(peers.sort()).toEqual([b.peerId, gamma.peerId].sort())
    } finally {
      sub.close()
      await Promise.all(intruders.map(async (peer) => await peer.stop()))
    }
  })
})
