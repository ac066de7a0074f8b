import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { issueCrl, revokeCertificate } from '../../ca/index.ts'
import { peerIdsOf, subscribeTopic, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

// Five real `bkg start` processes on 127.0.0.1. node-1 is the bootstrap/admin node; nodes 2-4
// bootstrap from it; node-5 knows only node-1.
describe('a 5-node mesh', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let nodes: TestNode[]

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    const first = await mesh.addNode('node-1', { roles: ['bootstrap', 'relay', 'admin', 'member'] })
    await first.start()
    const rest = await Promise.all([2, 3, 4, 5].map(async (i) => await mesh.addNode(`node-${i}`, { args: ['--bootstrap', first.addrs[0]] })))
    await Promise.all(rest.map(async (node) => await node.start()))
    nodes = [first, ...rest]
    await waitFor('every node admitted by node-1', async () => (await peerIdsOf(first)).length === 4, 20_000)
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('reports identity, certificate and reachability', async () => {
    const { status, body } = await nodes[0].api('GET', '/api/v1/node')
    expect(status).toBe(200)
    expect(body.peerId).toBe(nodes[0].peerId)
    expect(body.name).toBe('node-1')
    expect(body.cert.roles).toEqual(expect.arrayContaining(['bootstrap', 'relay', 'admin']))
    expect(['private', 'relayed', 'public', 'unknown']).toContain(body.reachability)
    expect(body.addrs.some((addr: string) => addr.startsWith('/ip4/127.0.0.1/tcp/'))).toBe(true)
    const peers = await nodes[0].api('GET', '/api/v1/peers')
    const names = peers.body.map((peer: { name: string }) => peer.name).sort()
    expect(names).toEqual(['node-2', 'node-3', 'node-4', 'node-5'])
    expect(peers.body[0].connection.transport).toBe('direct')
    expect(typeof peers.body[0].latencyMs).toBe('number')
  })

  it('node-5, which only knows node-1, finds node-3 through the DHT and dials it', async () => {
    const [, , third, , fifth] = nodes
    // a network lookup: the answer comes from another peer's routing table, never node-5's cache
    const found = await fifth.api('GET', `/api/v1/peers/${third.peerId}/lookup`)
    expect(found.status).toBe(200)
    expect(found.body.addrs).toEqual(expect.arrayContaining([third.addrs[0].replace(`/p2p/${third.peerId}`, '')]))
    expect(found.body.answeredBy).not.toBe(fifth.peerId)

    // drop any connection the DHT walk opened, then dial by PeerId alone
    await fifth.api('DELETE', `/api/v1/peers/${third.peerId}`)
    await waitFor('node-5 disconnected from node-3', async () => !(await peerIdsOf(fifth)).includes(third.peerId))
    const dialed = await fifth.api('POST', '/api/v1/peers/dial', { peerId: third.peerId })
    expect(dialed.status).toBe(200)
    expect(dialed.body.peerId).toBe(third.peerId)
    expect(dialed.body.name).toBe('node-3')
    expect(await peerIdsOf(fifth)).toContain(third.peerId)
    const info = await fifth.api('GET', '/api/v1/node')
    expect(info.body.dht.routingTableSize).toBeGreaterThanOrEqual(2)

    const unknown = await fifth.api('GET', '/api/v1/peers/12D3KooWBadBadBadBadBadBadBadBadBadBadBadBadBadBadBad/lookup')
    expect(unknown.status).toBe(400)
    expect(unknown.body.error.code).toBe('invalid_peer_id')
  })

  it('a gossip message reaches all 5 nodes', async () => {
    const subscriptions = await Promise.all(nodes.map(async (node) => await subscribeTopic(node, 'test/all')))
    try {
      // give gossipsub a few heartbeats to graft the mesh for the new topic
      await waitFor('topic mesh', async () => {
        const topics = await nodes[1].api('GET', '/api/v1/pubsub/topics')
        return topics.body.find((t: { topic: string, peers: number }) => t.topic === 'test/all')?.peers >= 1
      })
      await new Promise((resolve) => setTimeout(resolve, 1500))
      const sent = await nodes[1].api('POST', '/api/v1/pubsub/topics/test%2Fall/messages', { data: 'hello mesh' })
      expect(sent.status).toBe(200)
      expect(sent.body.recipients).toBeGreaterThan(0)
      for (const [index, sub] of subscriptions.entries()) {
        if (index === 1) continue // the publisher does not receive its own message
        await waitFor(`message at node-${index + 1}`, async () => sub.messages.find((m) => m.data === 'hello mesh'))
        expect(sub.messages.find((m) => m.data === 'hello mesh')?.from).toBe(nodes[1].peerId)
      }
    } finally {
      for (const sub of subscriptions) sub.close()
    }
  })

  it('a restarted node keeps its PeerId and rejoins', async () => {
    const second = nodes[1]
    const before = second.peerId
    expect(await second.stop('SIGTERM')).toBe(0)
    await waitFor('node-1 notices node-2 left', async () => !(await peerIdsOf(nodes[0])).includes(before))
    await second.start()
    const info = await second.api('GET', '/api/v1/node')
    expect(info.body.peerId).toBe(before)
    await waitFor('node-2 rejoined', async () => (await peerIdsOf(nodes[0])).includes(before))
  })

  it('a CRL published through the admin node drops the revoked peer mesh-wide and keeps it out', async () => {
    const victim = nodes[3]
    const certPem = await readFile(victim.paths.cert, 'utf8')
    await revokeCertificate(mesh.caDir, { certPem })
    const { crlPem } = await issueCrl(mesh.caDir, { days: 7 })
    const crlFile = join(tmp.dir, 'crl.pem')
    await writeFile(crlFile, crlPem)

    // a member node may not spread CRLs
    const refused = await nodes[2].api('POST', '/api/v1/admin/crl', { pem: crlPem })
    expect(refused.status).toBe(403)
    expect(refused.body.error.code).toBe('forbidden')

    const published = await nodes[0].api('POST', '/api/v1/admin/crl', { pem: crlPem })
    expect(published.status).toBe(200)
    expect(published.body.dropped).toContain(victim.peerId)

    for (const node of nodes.filter((n) => n !== victim)) {
      await waitFor(`${node.name} drops the revoked peer`, async () => !(await peerIdsOf(node)).includes(victim.peerId), 10_000)
      await waitFor(`${node.name} holds the CRL`, async () => (await node.api('GET', '/api/v1/admin/crl')).body.revoked.length === 1, 10_000)
    }
    // it stays out: a dial from the revoked node is refused
    const retry = await victim.api('POST', '/api/v1/peers/dial', { addr: nodes[0].addrs[0] })
    expect(retry.status).toBeGreaterThanOrEqual(400)
    await new Promise((resolve) => setTimeout(resolve, 1000))
    expect(await peerIdsOf(nodes[0])).not.toContain(victim.peerId)

    // publishing the same CRL again is stale
    const again = await nodes[0].api('POST', '/api/v1/admin/crl', { pem: crlPem })
    expect(again.status).toBe(409)
    expect(again.body.error.code).toBe('crl_stale')
  })
})
