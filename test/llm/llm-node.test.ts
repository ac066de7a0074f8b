import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { issueCrl, revokeCertificate } from '../../ca/index.ts'
import { runBkg } from '../helpers/cli.ts'
import { packTestModel, tamperPackage, type PackedTestModel } from '../helpers/llm.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

/**
 * Inference on real nodes: a signed test model published, checked and loaded; seeded requests
 * give the same text alone, under concurrency and on another node; refusals of tampered models;
 * the queue's bound.
 */
describe('inference on a node', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let a: TestNode
  let b: TestNode
  let model: PackedTestModel

  const chat = async (node: TestNode, body: Record<string, unknown>): Promise<{ status: number, body: any }> => await node.api('POST', '/api/v1/llm/chat', body)
  const hello = { model: 'tiny-llama@1.0.0', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 40, seed: 7, temperature: 0.8 }

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    a = await mesh.addNode('a', { roles: ['publisher', 'admin', 'bootstrap', 'member'] })
    model = await packTestModel({ dir: tmp.dir, publisher: a.paths })
    await a.start()
    b = await mesh.addNode('b', { args: ['--bootstrap', a.addrs[0]] })
    await writeFile(join(b.paths.dir, 'config.json'), JSON.stringify({ llm: { parallel: 1, maxQueued: 1 } }))
    await b.start()
    await waitFor('b admitted', async () => (await peerIdsOf(a)).includes(b.peerId))
    const published = await runBkg(['model', 'publish', model.path, '--data', a.paths.dir], tmp.dir)
    expect(published.code, published.stderr).toBe(0)
  }, 60_000)

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('lists the held GGUF with its header facts, loads it and answers with provenance', async () => {
    const listed = await waitFor('the header read', async () => {
      const { body } = await a.api('GET', '/api/v1/admin/llm/models')
      return body.models?.find((entry: any) => entry.gguf != null)
    })
    expect(listed).toMatchObject({ id: model.id, sha256: model.sha256, loaded: false, gguf: { architecture: 'llama', embeddingLength: 64 } })
    const loaded = await a.api('POST', '/api/v1/admin/llm/models/load', { model: model.id })
    expect(loaded.status, JSON.stringify(loaded.body)).toBe(200)
    expect(loaded.body).toMatchObject({ id: model.id, loaded: true, default: true })

    const answer = await chat(a, hello)
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    expect(answer.body.served_by).toBe(a.peerId)
    expect(answer.body.model_sha256).toBe(model.sha256)
    expect(answer.body.backend).toMatch(/^node-llama-cpp@\d+\.\d+\.\d+ \(cpu\)$/)
    expect(answer.body.deterministic).toBe(true)
    expect(answer.body.usage.completion_tokens).toBe(40)
  })

  it('gives a seeded request the same text alone, under 4 concurrent requests and on another node', { timeout: 120_000 }, async () => {
    const alone = (await chat(a, hello)).body.text
    expect(alone.length).toBeGreaterThan(0)
    const together = await Promise.all([0, 1, 2, 3].map(async () => await chat(a, hello)))
    for (const answer of together) expect(answer.body.text).toBe(alone)
    // b pulls the package through the mesh, checks it and loads it: another process, same bytes, same text
    const loaded = await b.api('POST', '/api/v1/admin/llm/models/load', { model: model.id, pull: true })
    expect(loaded.status, JSON.stringify(loaded.body)).toBe(200)
    const there = await chat(b, { ...hello, placement: 'local' })
    expect(there.body.served_by).toBe(b.peerId)
    expect(there.body.text).toBe(alone)
  })

  it('refuses a tampered package, and a held model whose file changed on disk', async () => {
    const other = await packTestModel({ dir: tmp.dir, publisher: a.paths, version: '2.0.0', model: { seed: 9 } })
    const tampered = await tamperPackage(other.path, { out: join(tmp.dir, 'tampered.bkg'), where: 'weights' })
    const published = await runBkg(['model', 'publish', tampered, '--data', a.paths.dir], tmp.dir)
    expect(published.code).not.toBe(0)
    expect(published.stderr).toMatch(/does not match/)

    const third = await packTestModel({ dir: tmp.dir, publisher: a.paths, version: '3.0.0', model: { seed: 11 } })
    expect((await runBkg(['model', 'publish', third.path, '--data', a.paths.dir], tmp.dir)).code).toBe(0)
    const onDisk = join(a.paths.dir, 'models', 'files', 'tiny-llama', '3.0.0', third.file)
    const bytes = await readFile(onDisk)
    bytes[bytes.length - 10] ^= 0xff
    await writeFile(onDisk, bytes)
    const refused = await a.api('POST', '/api/v1/admin/llm/models/load', { model: third.id })
    expect(refused.status).toBe(422)
    expect(refused.body.error.code).toBe('content_mismatch')
    const asked = await chat(a, { ...hello, model: third.id })
    expect(asked.body.error.code).toBe('content_mismatch')
  })

  it('refuses a held model whose publisher was revoked since it arrived', async () => {
    const publisher = await mesh.addNode('pub', { roles: ['publisher', 'member'] })
    const signed = await packTestModel({ dir: tmp.dir, publisher: publisher.paths, name: 'revoked-llama', model: { seed: 13 } })
    expect((await runBkg(['model', 'publish', signed.path, '--data', a.paths.dir], tmp.dir)).code).toBe(0)
    await revokeCertificate(mesh.caDir, { certPem: await readFile(publisher.paths.cert, 'utf8') })
    const { crlPem } = await issueCrl(mesh.caDir, { days: 7 })
    expect((await a.api('POST', '/api/v1/admin/crl', { pem: crlPem })).status).toBe(200)
    const refused = await a.api('POST', '/api/v1/admin/llm/models/load', { model: signed.id })
    expect(refused.status).toBe(400)
    expect(refused.body.error.code).toBe('publisher_revoked')
    const asked = await chat(a, { ...hello, model: signed.id })
    expect(asked.body.error.code).toBe('publisher_revoked')
  })

  it('answers 429 with Retry-After when the queue is full', async () => {
    const long = { ...hello, seed: undefined, max_tokens: 1500, placement: 'local' }
    const answers = await Promise.all([0, 1, 2, 3].map(async () => await fetch(`${b.url}/api/v1/llm/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${b.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(long)
    })))
    const refused = answers.filter((answer) => answer.status === 429)
    expect(refused.length).toBeGreaterThanOrEqual(1)
    expect(Number(refused[0].headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(((await refused[0].json()) as { error: { code: string } }).error.code).toBe('llm_busy')
    expect(answers.filter((answer) => answer.status === 200).length).toBeGreaterThanOrEqual(2)
  })

  it('unloading a model ends its running requests as cancelled and keeps the node answering', async () => {
    const running = chat(a, { ...hello, seed: undefined, max_tokens: 1900, model: model.id, placement: 'local' })
    await waitFor('the request generating', async () => {
      const listed = (await a.api('GET', '/api/v1/admin/llm/models')).body.models as Array<{ id: string, slots: { busy: number } | null }>
      return (listed.find((entry) => entry.id === model.id)?.slots?.busy ?? 0) > 0
    }, 10_000, 5)
    const unloaded = await a.api('POST', '/api/v1/admin/llm/models/unload', { model: model.id })
    expect(unloaded.status).toBe(200)
    expect(unloaded.body.loaded).toBe(false)
    const ended = await running
    expect(ended.status).toBe(200)
    expect(ended.body.finish_reason).toBe('cancelled')
    expect(ended.body.usage.completion_tokens).toBeLessThan(1900)
    expect((await a.api('GET', '/api/v1/health')).status).toBe(200)
    // a held model comes back at its next request
    expect((await chat(a, { ...hello, model: model.id })).status).toBe(200)
  })
})
