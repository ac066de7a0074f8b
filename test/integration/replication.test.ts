import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pathExists, runBkgSync as bkg } from '../helpers/cli.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

interface Job { id: string, state: string, holders: string[], eligible: number, replicas: number, version: string }

async function job (node: TestNode, id: string): Promise<Job> {
  const { status, body } = await node.api('GET', `/api/v1/replication/${id}`)
  expect(status, JSON.stringify(body)).toBe(200)
  return body
}

async function holds (node: TestNode, name: string, version: string): Promise<boolean> {
  const { body } = await node.api('GET', '/api/v1/models')
  return body.some((m: { name: string, version: string }) => m.name === name && m.version === version)
}

/** the replica log opens in the background after start */
async function replicasReady (node: TestNode): Promise<void> {
  await waitFor(`${node.name} replica log`, async () => (await node.api('GET', '/api/v1/replication')).status === 200, 20_000)
}

describe('replica tracking and replication jobs', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let origin: TestNode
  let labNodes: TestNode[]
  let outsider: TestNode
  let jobId: string
  let left: TestNode

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    origin = await mesh.addNode('origin', { roles: ['publisher', 'admin', 'bootstrap', 'member'], namespaces: ['lab'] })
    await origin.start()
    const joinArgs = ['--bootstrap', origin.addrs[0]]
    labNodes = await Promise.all(['lab-b', 'lab-c', 'lab-d'].map(async (name) => await mesh.addNode(name, { namespaces: ['lab'], args: joinArgs })))
    outsider = await mesh.addNode('outsider', { namespaces: ['other'], args: joinArgs })
    await Promise.all([...labNodes, outsider].map(async (node) => await node.start()))
    await waitFor('full mesh', async () => (await Promise.all(mesh.nodes.map(peerIdsOf))).every((ids) => ids.length === 4), 20_000)
    // a mesh without models never opens its replica log (OrbitDB stays unloaded) …
    await new Promise((resolve) => setTimeout(resolve, 2500))
    for (const node of mesh.nodes) expect(await pathExists(join(node.paths.models, 'replicas')), node.name).toBe(false)
    // … only the origin's log is opened, through the API: the lab nodes must open theirs on
    // their own when a peer's log appears (and then see the job)
    await replicasReady(origin)

    await mkdir(join(tmp.dir, 'model'))
    await writeFile(join(tmp.dir, 'model', 'weights.bin'), randomBytes(3 * 1024 * 1024 + 17))
    expect(bkg(['model', 'pack', join(tmp.dir, 'model'), '--name', 'repl', '--version', '1.0.0', '--data', origin.paths.dir, '--out', join(tmp.dir, 'repl.bkg')], tmp.dir).code).toBe(0)
    const published = bkg(['model', 'publish', join(tmp.dir, 'repl.bkg'), '--data', origin.paths.dir], tmp.dir)
    expect(published.code, published.stderr).toBe(0)
  }, 90_000)

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('nodes learn who holds a model from the replica log', async () => {
    for (const node of [origin, outsider]) {
      await waitFor(`${node.name} sees the origin's replica`, async () => {
        const { body } = await node.api('GET', '/api/v1/replicas')
        const entry = body.find((e: { name: string }) => e.name === 'repl')
        return entry?.holders.some((h: { peerId: string, live: boolean }) => h.peerId === origin.peerId && h.live)
      }, 15_000)
    }
  })

  it('refuses bad jobs with clear errors', async () => {
    const bad = await origin.api('POST', '/api/v1/replication', { name: 'repl', namespace: 'lab', replicas: 0 })
    expect(bad.status).toBe(400)
    expect(bad.body.error.code).toBe('invalid_request')
    const unknown = await origin.api('POST', '/api/v1/replication', { name: 'nope', namespace: 'lab', replicas: 2 })
    expect(unknown.status).toBe(404)
    expect(unknown.body.error.code).toBe('model_unknown')
    // a node without the admin role in its certificate cannot create jobs, even with its admin token
    const notAdmin = await labNodes[0].api('POST', '/api/v1/replication', { name: 'repl', namespace: 'lab', replicas: 2 })
    expect(notAdmin.status).toBe(403)
    expect(notAdmin.body.error.code).toBe('not_admin_node')
    const missing = await origin.api('GET', '/api/v1/replication/0123456789abcdef')
    expect(missing.status).toBe(404)
  })

  it('a job for 3 replicas in namespace lab is done when 3 nodes hold verified copies', async () => {
    const created = await origin.api('POST', '/api/v1/replication', { name: 'repl', namespace: 'lab', replicas: 3 })
    expect(created.status, JSON.stringify(created.body)).toBe(201)
    expect(created.body.version).toBe('1.0.0')
    jobId = created.body.id
    const done = await waitFor('job done', async () => {
      const view = await job(origin, jobId)
      return view.state === 'done' ? view : undefined
    }, 60_000, 200)
    expect(done.holders).toHaveLength(3)
    expect(done.holders).toContain(origin.peerId)
    // exactly N copies: placement is the same on every node, so no extra node pulled
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const holding = await Promise.all(labNodes.map(async (node) => await holds(node, 'repl', '1.0.0')))
    expect(holding.filter(Boolean)).toHaveLength(2)
    // never a node outside the namespace
    expect(await holds(outsider, 'repl', '1.0.0')).toBe(false)
    // every node reports the same job state
    for (const node of mesh.nodes) {
      const view = await waitFor(`${node.name} sees the job done`, async () => {
        const { status, body } = await node.api('GET', `/api/v1/replication/${jobId}`)
        return status === 200 && body.state === 'done' ? body : undefined
      }, 15_000)
      expect([...view.holders].sort()).toEqual([...done.holders].sort())
    }
  })

  it('a holder that leaves lowers the count and the job re-replicates to the remaining lab node', async () => {
    const before = await job(origin, jobId)
    const leaving = labNodes.find((node) => before.holders.includes(node.peerId))!
    const spare = labNodes.find((node) => !before.holders.includes(node.peerId))!
    await leaving.stop()
    left = leaving
    const recovered = await waitFor('job done again', async () => {
      const view = await job(origin, jobId)
      return view.state === 'done' && !view.holders.includes(leaving.peerId) ? view : undefined
    }, 60_000, 200)
    expect(recovered.holders).toHaveLength(3)
    expect(recovered.holders).toContain(spare.peerId)
    expect(await holds(spare, 'repl', '1.0.0')).toBe(true)
  })

  it('a cancelled job stays cancelled everywhere', async () => {
    const cancelled = await origin.api('DELETE', `/api/v1/replication/${jobId}`)
    expect(cancelled.status).toBe(200)
    expect(cancelled.body.state).toBe('cancelled')
    await waitFor('outsider sees the cancellation', async () => {
      const { body } = await outsider.api('GET', `/api/v1/replication/${jobId}`)
      return body.state === 'cancelled'
    }, 15_000)
  })

  it('removing a copy is recorded, and a restarted holder keeps its log and rejoins', async () => {
    const { body: table } = await origin.api('GET', '/api/v1/replicas')
    const holder = labNodes.find((node) => node !== left && table[0].holders.some((h: { peerId: string }) => h.peerId === node.peerId))!
    expect((await holder.api('DELETE', '/api/v1/models/repl/1.0.0')).status).toBe(200)
    await waitFor('origin sees the copy gone', async () => {
      const { body } = await origin.api('GET', '/api/v1/replicas')
      return !body.find((e: { name: string }) => e.name === 'repl').holders.some((h: { peerId: string }) => h.peerId === holder.peerId)
    }, 15_000)
    await left.start()
    await replicasReady(left)
    const { body } = await left.api('GET', '/api/v1/replicas')
    const entry = body.find((e: { name: string }) => e.name === 'repl')
    expect(entry.holders.map((h: { peerId: string }) => h.peerId)).toContain(left.peerId)
    await waitFor('the restarted node sees the cancellation', async () => (await left.api('GET', `/api/v1/replication/${jobId}`)).body.state === 'cancelled', 15_000)
  })
})
