import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBkgSync as bkg } from '../helpers/cli.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

async function pullJob (node: TestNode, name: string, version?: string): Promise<any> {
  const started = await node.api('POST', '/api/v1/models/pulls', version == null ? { name } : { name, version })
  expect(started.status, JSON.stringify(started.body)).toBe(202)
  return await waitFor(`pull on ${node.name}`, async () => {
    const { body } = await node.api('GET', `/api/v1/models/pulls/${started.body.id}?wait=5000`)
    return body.finishedAt != null ? body : undefined
  }, 60_000, 0)
}

async function fileSha (node: TestNode, name: string, version: string, path: string): Promise<string> {
  const response = await fetch(`${node.url}/api/v1/models/${name}/${version}/files/${path}`, { headers: { authorization: `Bearer ${node.token}` } })
  expect(response.status).toBe(200)
  return createHash('sha256').update(Buffer.from(await response.arrayBuffer())).digest('hex')
}

describe('pulling a model from peers', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let origin: TestNode
  let second: TestNode
  let third: TestNode
  let weightsSha: string

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    origin = await mesh.addNode('origin', { roles: ['publisher', 'admin', 'bootstrap', 'member'] })
    await origin.start()
    second = await mesh.addNode('second', { args: ['--bootstrap', origin.addrs[0]] })
    third = await mesh.addNode('third', { args: ['--bootstrap', origin.addrs[0]] })
    await Promise.all([second.start(), third.start()])
    await waitFor('mesh', async () => (await peerIdsOf(origin)).length === 2)
    const weights = randomBytes(12 * 1024 * 1024 + 12345)
    weightsSha = createHash('sha256').update(weights).digest('hex')
    await mkdir(join(tmp.dir, 'model'))
    await writeFile(join(tmp.dir, 'model', 'weights.bin'), weights)
    await writeFile(join(tmp.dir, 'model', 'README'), 'tiny test model\n')
    // repeated chunks: one leaf CID at several offsets, fetched once and placed at each
    await writeFile(join(tmp.dir, 'model', 'padding.bin'), Buffer.alloc(3 * 1024 * 1024 + 5))
    expect(bkg(['model', 'pack', join(tmp.dir, 'model'), '--name', 'tiny', '--version', '1.0.0', '--data', origin.paths.dir, '--out', join(tmp.dir, 'tiny.bkg')], tmp.dir).code).toBe(0)
    const published = bkg(['model', 'publish', join(tmp.dir, 'tiny.bkg'), '--data', origin.paths.dir], tmp.dir)
    expect(published.code, published.stderr).toBe(0)
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('the published manifest reaches the other nodes over gossip, verified', async () => {
    for (const node of [second, third]) {
      const entry = await waitFor(`${node.name} catalog`, async () => {
        const { body } = await node.api('GET', '/api/v1/models/catalog')
        return body.find((e: { name: string }) => e.name === 'tiny')
      }, 10_000)
      expect(entry).toMatchObject({ name: 'tiny', version: '1.0.0', publisher: 'origin', origin: origin.peerId })
    }
  })

  it('a node pulls a model it has never seen (CLI) and serves identical bytes', async () => {
    const pulled = bkg(['model', 'pull', 'tiny@1.0.0', '--data', second.paths.dir], tmp.dir)
    expect(pulled.code, pulled.stderr).toBe(0)
    expect(pulled.stdout).toMatch(/tiny@1\.0\.0 pulled and verified/)
    expect(await fileSha(second, 'tiny', '1.0.0', 'weights.bin')).toBe(weightsSha)
    const list = await second.api('GET', '/api/v1/models')
    expect(list.body.map((m: { name: string }) => m.name)).toEqual(['tiny'])
    // the checked files also lie on disk for local runtimes
    const onDisk = await readFile(join(list.body[0].location, 'weights.bin'))
    expect(createHash('sha256').update(onDisk).digest('hex')).toBe(weightsSha)
    expect(await readFile(join(list.body[0].location, 'README'), 'utf8')).toBe('tiny test model\n')
    expect((await readFile(join(list.body[0].location, 'padding.bin'))).equals(Buffer.alloc(3 * 1024 * 1024 + 5))).toBe(true)
  })

  it('a pull from two providers completes when one of them serves corrupt blocks, and the bad one is dropped', async () => {
    // corrupt the second node's held files, where its leaves are served from: one flipped byte
    // in every 1 MiB chunk, so every leaf it serves is bad
    const files = join(second.paths.models, 'files')
    let corrupted = 0
    for (const entry of await readdir(files, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue
      const path = join(entry.parentPath, entry.name)
      const bytes = await readFile(path)
      for (let offset = 0; offset < bytes.byteLength; offset += 1024 * 1024) {
        bytes[offset] ^= 0xff
        corrupted++
      }
      await writeFile(path, bytes)
    }
    expect(corrupted).toBeGreaterThan(10)

    const job = await pullJob(third, 'tiny')
    expect(job.state, JSON.stringify(job.error)).toBe('done')
    expect(job.version).toBe('1.0.0')
    expect(await fileSha(third, 'tiny', '1.0.0', 'weights.bin')).toBe(weightsSha)
    // the corrupt provider was penalized: disconnected and refused
    await waitFor('third dropped second', async () => !(await peerIdsOf(third)).includes(second.peerId), 10_000)
    const metrics = await third.api('GET', '/metrics')
    expect(metrics.status).toBe(200)
  })

  it('refuses to pull what nobody holds', async () => {
    const job = await pullJob(third, 'nothing-here')
    expect(job.state).toBe('failed')
    expect(job.error.code).toBe('model_not_found')
  })

  it('a long poll on a pull job answers when the pull finishes, not when the wait runs out; bad waits are refused', async () => {
    const started = await third.api('POST', '/api/v1/models/pulls', { name: 'nobody-has-this' })
    const asked = Date.now()
    const { status, body } = await third.api('GET', `/api/v1/models/pulls/${started.body.id}?wait=30000`)
    expect(status).toBe(200)
    expect(body.finishedAt).not.toBeNull()
    expect(Date.now() - asked).toBeLessThan(30_000)
    for (const wait of ['-1', '30001', 'soon', '1.5']) {
      const refused = await third.api('GET', `/api/v1/models/pulls/${started.body.id}?wait=${wait}`)
      expect(refused.status, wait).toBe(400)
      expect(refused.body.error.code).toBeTypeOf('string')
    }
    expect((await third.api('GET', '/api/v1/models/pulls/0123456789abcdef?wait=100')).status).toBe(404)
  })
})
