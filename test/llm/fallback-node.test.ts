import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBkg } from '../helpers/cli.ts'
import { createToken } from '../helpers/events.ts'
import { packTestModel, type PackedTestModel } from '../helpers/llm.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

/**
 * Peer fallback on real nodes: a node without the model answers through the peer that announces
 * it and says so; a peer killed while the request waits in its queue (before the first token)
 * makes the request go on to another peer.
 */
describe('inference through peers', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let a: TestNode
  let b: TestNode
  let c: TestNode
  let model: PackedTestModel

  const meshOf = async (node: TestNode): Promise<Array<{ id: string, peerId: string }>> => (await node.api('GET', '/api/v1/admin/llm/models')).body.mesh ?? []
  const hello = { messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 30, seed: 3, temperature: 0.7 }

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    a = await mesh.addNode('a', { roles: ['publisher', 'admin', 'bootstrap', 'member'] })
    model = await packTestModel({ dir: tmp.dir, publisher: a.paths })
    // one sequence and a deep queue: a forwarded request can be made to wait in a's queue
    await writeFile(join(a.paths.dir, 'config.json'), JSON.stringify({ llm: { parallel: 1, maxQueued: 12, announceIntervalMs: 1000 } }))
    await a.start()
    b = await mesh.addNode('b', { args: ['--bootstrap', a.addrs[0]] })
    c = await mesh.addNode('c', { args: ['--bootstrap', a.addrs[0]] })
    await writeFile(join(b.paths.dir, 'config.json'), JSON.stringify({ llm: { announceIntervalMs: 1000 } }))
    // one sequence: c is easily saturated
    await writeFile(join(c.paths.dir, 'config.json'), JSON.stringify({ llm: { announceIntervalMs: 1000, parallel: 1 } }))
    await Promise.all([b.start(), c.start()])
    await waitFor('b and c admitted', async () => {
      const peers = await peerIdsOf(a)
      return peers.includes(b.peerId) && peers.includes(c.peerId)
    })
    expect((await runBkg(['model', 'publish', model.path, '--data', a.paths.dir], tmp.dir)).code).toBe(0)
    expect((await a.api('POST', '/api/v1/admin/llm/models/load', { model: model.id })).status).toBe(200)
    // c holds the model but does not serve it yet: it is no candidate until it loads it
    const held = await c.api('POST', '/api/v1/admin/llm/models/load', { model: model.id, pull: true })
    expect(held.status, JSON.stringify(held.body)).toBe(200)
    expect((await c.api('POST', '/api/v1/admin/llm/models/unload', { model: model.id })).status).toBe(200)
    await waitFor('b sees only a announce the model', async () => {
      const seen = await meshOf(b)
      return seen.length === 1 && seen[0].peerId === a.peerId
    })
  }, 90_000)

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('answers on a node without the model through the peer that has it, and names that peer', async () => {
    const direct = await a.api('POST', '/api/v1/llm/chat', { ...hello, model: model.id })
    expect(direct.status).toBe(200)
    const response = await fetch(`${b.url}/api/v1/llm/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${b.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...hello, model: model.id })
    })
    const body = await response.json() as Record<string, any>
    expect(response.status, JSON.stringify(body)).toBe(200)
    expect(response.headers.get('x-bkg-served-by')).toBe(a.peerId)
    expect(body.served_by).toBe(a.peerId)
    expect(body.model_sha256).toBe(model.sha256)
    // the seeded request gives the same text whichever node ran it
    expect(body.text).toBe(direct.body.text)
    const metrics = (await b.api<string>('GET', '/metrics')).body
    expect(metrics).toMatch(/bkg_llm_fallbacks_total\{reason="missing"\} 1/)
  })

  it('sends a request to a peer with a free sequence when its own are all busy', { timeout: 60_000 }, async () => {
    expect((await c.api('POST', '/api/v1/admin/llm/models/load', { model: model.id })).status).toBe(200)
    await waitFor('c sees a announce the model', async () => (await meshOf(c)).some((entry) => entry.peerId === a.peerId))
    const long = { model: model.id, messages: [{ role: 'user', content: 'go' }], max_tokens: 1900, temperature: 0, placement: 'local' }
    const busy = c.api('POST', '/api/v1/llm/chat', long)
    await waitFor('c\'s one sequence busy', async () => {
      const listed = (await c.api('GET', '/api/v1/admin/llm/models')).body.models as Array<{ slots: { busy: number } | null }>
      return (listed[0].slots?.busy ?? 0) > 0
    }, 10_000, 5)
    const answer = await c.api('POST', '/api/v1/llm/chat', { ...hello, seed: undefined, model: model.id })
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    expect(answer.body.served_by).toBe(a.peerId)
    expect((await c.api<string>('GET', '/metrics')).body).toMatch(/bkg_llm_fallbacks_total\{reason="saturated"\} 1/)
    expect((await busy).body.served_by).toBe(c.peerId)
    // c no longer serves it: the next test starts with a as the only candidate
    expect((await c.api('POST', '/api/v1/admin/llm/models/unload', { model: model.id })).status).toBe(200)
    await waitFor('b sees only a again', async () => {
      const seen = await meshOf(b)
      return seen.length === 1 && seen[0].peerId === a.peerId
    })
  })

  it('goes on to another peer when the one it chose dies before the first token', { timeout: 90_000 }, async () => {
    // a's one sequence is busy with long requests of six clients: the queue serves clients in
    // turn, so b's request (a seventh client) waits behind all of them, several seconds
    const long = { model: model.id, messages: [{ role: 'user', content: 'go' }], max_tokens: 1900, temperature: 0, placement: 'local' }
    const tokens = Array.from({ length: 6 }, () => createToken(a, 'default', 'reader'))
    const busy = tokens.map(async (token) => await a.api('POST', '/api/v1/llm/chat', long, token).catch(() => null))
    await waitFor('a busy with a queue', async () => {
      const listed = (await a.api('GET', '/api/v1/admin/llm/models')).body.models as Array<{ slots: { queued: number } | null }>
      return (listed[0].slots?.queued ?? 0) >= 5
    })
    const fallbacks = async (): Promise<number> => Number(/bkg_llm_fallbacks_total\{reason="missing"\} (\d+)/.exec((await b.api<string>('GET', '/metrics')).body)?.[1] ?? 0)
    const before = await fallbacks()
    const answer = fetch(`${b.url}/api/v1/llm/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${b.token}`, 'content-type': 'application/json' },
      // not seeded: a seeded request has a sequence of its own and would not wait
      body: JSON.stringify({ ...hello, seed: undefined, model: model.id })
    })
    await waitFor('b forwarded its request', async () => await fallbacks() > before)
    expect((await c.api('POST', '/api/v1/admin/llm/models/load', { model: model.id })).status).toBe(200)
    await waitFor('b sees c announce the model', async () => (await meshOf(b)).some((entry) => entry.peerId === c.peerId))
    await a.stop('SIGKILL')
    const response = await answer
    const body = await response.json() as Record<string, any>
    expect(response.status, JSON.stringify(body)).toBe(200)
    expect(body.served_by, JSON.stringify(body.timings)).toBe(c.peerId)
    expect(response.headers.get('x-bkg-served-by')).toBe(c.peerId)
    expect(body.failed_peers.map((failure: { peer_id: string }) => failure.peer_id)).toEqual([a.peerId])
    await Promise.all(busy)
  })
})
