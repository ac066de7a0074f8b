import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

// Circuit relay v2 between admitted peers: a node holding a reservation on a relay-role node is
// reachable through it, and admission runs over the relayed connection too.
describe('circuit relay', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let relay: TestNode
  let hidden: TestNode
  let dialer: TestNode

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    relay = await mesh.addNode('relay', { roles: ['relay', 'bootstrap', 'member'] })
    await relay.start()
    hidden = await mesh.addNode('hidden', { args: ['--bootstrap', relay.addrs[0], '--relay-reserve'] })
    dialer = await mesh.addNode('dialer', { args: ['--bootstrap', relay.addrs[0]] })
    await Promise.all([hidden.start(), dialer.start()])
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('a node with a reservation reports itself relayed and is reachable through the relay', async () => {
    const info = await waitFor('reservation on the relay', async () => {
      const { body } = await hidden.api('GET', '/api/v1/node')
      return body.reachability === 'relayed' ? body : undefined
    }, 20_000)
    const circuit = info.addrs.find((addr: string) => addr.includes(`/p2p/${relay.peerId}/p2p-circuit`))
    expect(circuit).toBeDefined()

    const relayNode = await relay.api('GET', '/api/v1/node')
    expect(relayNode.body.addrs.some((addr: string) => addr.includes('/p2p-circuit'))).toBe(false)

    // libp2p hands back an existing connection to a peer whatever address is dialled, and the
    // DHT may reconnect the two directly at any moment: close, dial the circuit, retry on a race
    let dialed: { status: number, body: any } | undefined
    for (let attempt = 0; attempt < 5 && dialed?.body.transport !== 'relayed'; attempt++) {
      if ((await peerIdsOf(dialer)).includes(hidden.peerId)) {
        await dialer.api('DELETE', `/api/v1/peers/${hidden.peerId}`)
        await waitFor('direct connection closed', async () => !(await peerIdsOf(dialer)).includes(hidden.peerId))
      }
      dialed = await dialer.api('POST', '/api/v1/peers/dial', { addr: circuit })
      expect(dialed.status, JSON.stringify(dialed.body)).toBe(200)
    }
    expect(dialed!.body.name).toBe('hidden')
    // admission ran over the relayed connection (DCUtR may upgrade it to a direct one afterwards)
    expect(dialed!.body.transport).toBe('relayed')
    expect(dialed!.body.remoteAddr).toContain(`/p2p/${relay.peerId}/p2p-circuit`)
    const peers = await dialer.api('GET', '/api/v1/peers')
    const entry = peers.body.find((peer: { peerId: string }) => peer.peerId === hidden.peerId)
    expect(entry.roles).toEqual(['member'])
  })
})
