import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBkgSync as bkg } from '../helpers/cli.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

// A publisher node and a member node: publish a signed package through the CLI, see it stored,
// served verified, announced in the DHT, refused when it is bad, removed.
describe('models held by a node', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let publisher: TestNode
  let member: TestNode
  let weights: Buffer

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    publisher = await mesh.addNode('publisher', { roles: ['publisher', 'admin', 'bootstrap', 'member'] })
    await publisher.start()
    member = await mesh.addNode('member', { args: ['--bootstrap', publisher.addrs[0]] })
    await member.start()
    await waitFor('member admitted', async () => (await peerIdsOf(publisher)).includes(member.peerId))
    weights = randomBytes(2_500_000)
    await mkdir(join(tmp.dir, 'model'))
    await writeFile(join(tmp.dir, 'model', 'weights.bin'), weights)
    await writeFile(join(tmp.dir, 'model', 'config.json'), '{"layers":2}\n')
    const packed = bkg(['model', 'pack', join(tmp.dir, 'model'), '--name', 'tiny', '--version', '1.0.0', '--licence', 'MIT', '--data', publisher.paths.dir, '--out', join(tmp.dir, 'tiny.bkg')], tmp.dir)
    expect(packed.code, packed.stderr).toBe(0)
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('publishes through the CLI, lists it, serves its files verified and announces them in the DHT', async () => {
    const published = bkg(['model', 'publish', join(tmp.dir, 'tiny.bkg'), '--data', publisher.paths.dir], tmp.dir)
    expect(published.code, published.stderr).toBe(0)
    expect(published.stdout).toMatch(/tiny@1\.0\.0 published/)
    const again = bkg(['model', 'publish', join(tmp.dir, 'tiny.bkg'), '--data', publisher.paths.dir], tmp.dir)
    expect(again.code).toBe(0)
    expect(again.stderr).toMatch(/already held/)

    const listed = bkg(['model', 'ls', '--data', publisher.paths.dir, '--json'], tmp.dir)
    const models = JSON.parse(listed.stdout)
    expect(models).toHaveLength(1)
    expect(models[0]).toMatchObject({ name: 'tiny', version: '1.0.0', licence: 'MIT', totalSize: weights.byteLength + 13 })

    const response = await fetch(`${publisher.url}/api/v1/models/tiny/1.0.0/files/weights.bin`, { headers: { authorization: `Bearer ${member.token}` } })
    expect(response.status).toBe(401) // the member's token belongs to the member node
    const served = await fetch(`${publisher.url}/api/v1/models/tiny/1.0.0/files/weights.bin`, { headers: { authorization: `Bearer ${publisher.token}` } })
    expect(served.status).toBe(200)
    const body = Buffer.from(await served.arrayBuffer())
    expect(createHash('sha256').update(body).digest('hex')).toBe(createHash('sha256').update(weights).digest('hex'))
    expect(served.headers.get('x-content-sha256')).toBe(createHash('sha256').update(weights).digest('hex'))

    const cid = models[0].files.find((f: { path: string }) => f.path === 'weights.bin').cid
    const providers = await waitFor('provider record visible from the member', async () => {
      const { body: found } = await member.api('GET', `/api/v1/content/${cid}/providers`)
      return found.some((p: { peerId: string }) => p.peerId === publisher.peerId) ? found : undefined
    }, 20_000, 500)
    expect(providers[0].peerId).toBe(publisher.peerId)

    const verified = await publisher.api('POST', '/api/v1/models/tiny/1.0.0/verify')
    expect(verified.status).toBe(200)
  })

  it('refuses a tampered package, a rollback and garbage', async () => {
    const v2 = bkg(['model', 'pack', join(tmp.dir, 'model'), '--name', 'tiny', '--version', '2.0.0', '--data', publisher.paths.dir, '--out', join(tmp.dir, 'tiny2.bkg')], tmp.dir)
    expect(v2.code, v2.stderr).toBe(0)
    const bytes = await readFile(join(tmp.dir, 'tiny2.bkg'))
    bytes[bytes.length - 20] ^= 0xff
    await writeFile(join(tmp.dir, 'tampered.bkg'), bytes)
    const tampered = bkg(['model', 'publish', join(tmp.dir, 'tampered.bkg'), '--data', publisher.paths.dir], tmp.dir)
    expect(tampered.code).not.toBe(0)
    expect(tampered.stderr).toMatch(/content_mismatch/)
    expect((await publisher.api('GET', '/api/v1/models/tiny/2.0.0')).status).toBe(404)

    expect(bkg(['model', 'publish', join(tmp.dir, 'tiny2.bkg'), '--data', publisher.paths.dir], tmp.dir).code).toBe(0)
    const old = bkg(['model', 'pack', join(tmp.dir, 'model'), '--name', 'tiny', '--version', '1.5.0', '--data', publisher.paths.dir, '--out', join(tmp.dir, 'tiny15.bkg')], tmp.dir)
    expect(old.code).toBe(0)
    const rollback = bkg(['model', 'publish', join(tmp.dir, 'tiny15.bkg'), '--data', publisher.paths.dir], tmp.dir)
    expect(rollback.code).not.toBe(0)
    expect(rollback.stderr).toMatch(/version_rollback/)

    const garbage = await fetch(`${member.url}/api/v1/models`, {
      method: 'POST',
      headers: { authorization: `Bearer ${member.token}`, 'content-type': 'application/octet-stream' },
      body: 'not a package'
    })
    expect(garbage.status).toBe(400)
    expect(((await garbage.json()) as { error: { code: string } }).error.code).toBe('package_malformed')
  })

  it('removes a model and the blocks no other model needs', async () => {
    const location = (await publisher.api('GET', '/api/v1/models/tiny/1.0.0')).body.location
    expect((await readFile(join(location, 'weights.bin'))).equals(weights)).toBe(true)
    const removed = bkg(['model', 'rm', 'tiny@1.0.0', '--data', publisher.paths.dir], tmp.dir)
    expect(removed.code, removed.stderr).toBe(0)
    const gone = await publisher.api('GET', '/api/v1/models/tiny/1.0.0')
    expect(gone.status).toBe(404)
    await expect(readFile(join(location, 'weights.bin'))).rejects.toThrow(/ENOENT/)
    // 2.0.0 holds identical content: its files are still served
    const still = await fetch(`${publisher.url}/api/v1/models/tiny/2.0.0/files/weights.bin`, { headers: { authorization: `Bearer ${publisher.token}` } })
    expect(Buffer.from(await still.arrayBuffer()).equals(weights)).toBe(true)
    const bad = bkg(['model', 'rm', 'tiny', '--data', publisher.paths.dir], tmp.dir)
    expect(bad.code).toBe(2)
  })

  it('answers 422 content_mismatch instead of serving a corrupt block', async () => {
    // leaves are served from the held files: flip a byte in each
    const files = join(publisher.paths.models, 'files')
    for (const entry of await readdir(files, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue
      const path = join(entry.parentPath, entry.name)
      const bytes = await readFile(path)
      if (bytes.byteLength === 0) continue
      bytes[0] ^= 0xff
      await writeFile(path, bytes)
    }
    const served = await publisher.api('GET', '/api/v1/models/tiny/2.0.0/files/config.json')
    expect(served.status).toBe(422)
    expect(served.body.error.code).toBe('content_mismatch')
    const verified = await publisher.api('POST', '/api/v1/models/tiny/2.0.0/verify')
    expect(verified.status).toBe(422)
  })
})
