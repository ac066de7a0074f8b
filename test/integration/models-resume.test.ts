import { randomBytes, createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBkgOk as bkg } from '../helpers/cli.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

const MIB = 1024 * 1024
const SIZE = 64 * MIB

async function startPull (node: TestNode): Promise<string> {
  const { status, body } = await node.api('POST', '/api/v1/models/pulls', { name: 'big', version: '1.0.0' })
  expect(status).toBe(202)
  return body.id
}

async function job (node: TestNode, id: string): Promise<any> {
  return (await node.api('GET', `/api/v1/models/pulls/${id}`)).body
}

async function finished (node: TestNode, id: string): Promise<any> {
  return await waitFor('pull finished', async () => {
    const current = await job(node, id)
    return current.finishedAt != null ? current : undefined
  }, 120_000, 50)
}

// Interrupted pulls: a seeder dies half-way, the puller dies half-way. Nothing verified is fetched
// twice, and the result is byte-identical.
describe('interrupted pulls resume', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let nodes: Record<string, TestNode>
  let sha: string

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    const origin = await mesh.addNode('origin', { roles: ['publisher', 'admin', 'bootstrap', 'member'] })
    await origin.start()
    nodes = { origin }
    for (const name of ['backup', 'puller']) {
      nodes[name] = await mesh.addNode(name, { args: ['--bootstrap', origin.addrs[0]] })
      await nodes[name].start()
    }
    await waitFor('mesh', async () => (await peerIdsOf(origin)).length === 2)
    const weights = randomBytes(SIZE)
    sha = createHash('sha256').update(weights).digest('hex')
    await mkdir(join(tmp.dir, 'model'))
    await writeFile(join(tmp.dir, 'model', 'weights.bin'), weights)
    bkg(['model', 'pack', join(tmp.dir, 'model'), '--name', 'big', '--version', '1.0.0', '--data', origin.paths.dir, '--out', join(tmp.dir, 'big.bkg')], tmp.dir)
    // two seeders hold it from the start
    bkg(['model', 'publish', join(tmp.dir, 'big.bkg'), '--data', origin.paths.dir], tmp.dir)
    bkg(['model', 'publish', join(tmp.dir, 'big.bkg'), '--data', nodes.backup.paths.dir], tmp.dir)
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('a puller killed half-way resumes after its restart from the blocks on disk', async () => {
    const { puller } = nodes
    const id = await startPull(puller)
    await waitFor('half-way', async () => (await job(puller, id)).bytes >= SIZE / 4, 60_000, 20)
    await puller.stop('SIGKILL')
    await puller.start()
    await waitFor('puller back in the mesh', async () => (await peerIdsOf(puller)).length >= 1)
    const done = await finished(puller, await startPull(puller))
    expect(done.state, JSON.stringify(done.error)).toBe('done')
    expect(done.resumedBlocks).toBeGreaterThan(1)
    // 64 leaves + 1 root: the second run fetched only what the first had not stored
    expect(done.blocks).toBe(65)
    expect(done.fetchedBlocks).toBe(65 - done.resumedBlocks)
    const response = await fetch(`${puller.url}/api/v1/models/big/1.0.0/files/weights.bin`, { headers: { authorization: `Bearer ${puller.token}` } })
    expect(createHash('sha256').update(Buffer.from(await response.arrayBuffer())).digest('hex')).toBe(sha)
  })

  it('a pull goes on from the second seeder when the first dies half-way, fetching no block twice', async () => {
    const late = await mesh.addNode('late', { args: ['--bootstrap', nodes.backup.addrs[0]] })
    await late.start()
    await waitFor('late sees both seeders', async () => {
      const peers = await peerIdsOf(late)
      return peers.includes(nodes.origin.peerId) && peers.includes(nodes.backup.peerId)
    }, 15_000)
    const id = await startPull(late)
    await waitFor('a quarter fetched', async () => (await job(late, id)).bytes >= SIZE / 4, 60_000, 20)
    await nodes.origin.stop('SIGKILL')
    const done = await finished(late, id)
    expect(done.state, JSON.stringify(done.error)).toBe('done')
    expect(done.blocks).toBe(65)
    expect(done.resumedBlocks).toBe(0)
    expect(done.fetchedBlocks).toBe(65)
    const response = await fetch(`${late.url}/api/v1/models/big/1.0.0/files/weights.bin`, { headers: { authorization: `Bearer ${late.token}` } })
    expect(createHash('sha256').update(Buffer.from(await response.arrayBuffer())).digest('hex')).toBe(sha)
  })
})
