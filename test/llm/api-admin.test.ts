/**
 * `/api/v1/llm/embed`, tokenize, detokenize and the admin model routes with a fake LLM service.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FAKE_MODEL, FAKE_PEER, fakeVector, startFakeApi, type FakeApi } from './api-fake.ts'

let fake: FakeApi
beforeAll(async () => { fake = await startFakeApi() })
afterAll(async () => { await fake.close() })

async function call (method: string, path: string, body?: unknown, token = fake.token): Promise<{ status: number, headers: Headers, json: any }> {
  const response = await fetch(`${fake.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined
  })
  return { status: response.status, headers: response.headers, json: await response.json() }
}

describe('embed, tokenize, detokenize', () => {
  it('embeds one text or several, naming who served', async () => {
    const one = await call('POST', '/api/v1/llm/embed', { input: 'hello' })
    expect(one.status).toBe(200)
    expect(one.headers.get('x-bkg-served-by')).toBe(FAKE_PEER)
    expect(one.json).toMatchObject({ model: FAKE_MODEL, dimensions: 8, served_by: FAKE_PEER, embeddings: [fakeVector('hello')], usage: { prompt_tokens: 5, total_tokens: 5 } })
    const two = await call('POST', '/api/v1/llm/embed', { model: FAKE_MODEL, input: ['a', 'b'], placement: 'local' })
    expect(two.json.embeddings).toEqual([fakeVector('a'), fakeVector('b')])
    expect(fake.llm.embedCalls.at(-1)).toEqual({ model: FAKE_MODEL, input: ['a', 'b'], placement: 'local' })
    expect((await call('POST', '/api/v1/llm/embed', { input: [] })).status).toBe(400)
  })

  it('a busy node answers 429 with Retry-After', async () => {
    fake.llm.script.busy = 5
    const busy = await call('POST', '/api/v1/llm/embed', { input: 'x' })
    fake.llm.script.busy = null
    expect(busy.status).toBe(429)
    expect(busy.headers.get('retry-after')).toBe('5')
  })

  it('tokenizes and back', async () => {
    const tokens = await call('POST', '/api/v1/llm/tokenize', { text: 'héllo' })
    expect(tokens.json).toEqual({ model: FAKE_MODEL, tokens: [...Buffer.from('héllo')], served_by: FAKE_PEER })
    expect(tokens.headers.get('x-bkg-served-by')).toBe(FAKE_PEER)
    const text = await call('POST', '/api/v1/llm/detokenize', { model: FAKE_MODEL, tokens: tokens.json.tokens })
    expect(text.json).toEqual({ model: FAKE_MODEL, text: 'héllo', served_by: FAKE_PEER })
    expect(text.headers.get('x-bkg-served-by')).toBe(FAKE_PEER)
    expect((await call('POST', '/api/v1/llm/detokenize', { tokens: [-1] })).status).toBe(400)
  })
})

describe('/api/v1/admin/llm', () => {
  it('needs the admin token', async () => {
    expect((await call('GET', '/api/v1/admin/llm/models')).status).toBe(403)
    expect((await call('POST', '/api/v1/admin/llm/models/load', { model: FAKE_MODEL })).status).toBe(403)
  })

  it('lists held models, the default and the mesh; loads, sets the default, unloads', async () => {
    const list = await call('GET', '/api/v1/admin/llm/models', undefined, fake.admin)
    expect(list.status).toBe(200)
    expect(list.json.default).toBe(FAKE_MODEL)
    expect(list.json.models.map((model: any) => [model.id, model.loaded, model.default])).toEqual([[FAKE_MODEL, true, true], ['other@2.0.0', false, false]])
    expect(list.json.models[0]).toMatchObject({ sha256: 'ab'.repeat(32), gguf: { architecture: 'llama' }, slots: { busy: 0, total: 4, queued: 0 } })
    expect(list.json.mesh).toEqual([expect.objectContaining({ id: 'remote@3.0.0', peerId: '12D3KooWOtherPeer', latencyMs: 3 })])

    const loaded = await call('POST', '/api/v1/admin/llm/models/load', { model: 'other@2.0.0', default: true }, fake.admin)
    expect(loaded.status).toBe(200)
    expect(loaded.json).toMatchObject({ id: 'other@2.0.0', loaded: true, default: true })
    expect(fake.llm.defaultModel()).toBe('other@2.0.0')

    const cleared = await call('PUT', '/api/v1/admin/llm/default', { model: null }, fake.admin)
    expect(cleared.json).toEqual({ default: null, model: null })
    const set = await call('PUT', '/api/v1/admin/llm/default', { model: FAKE_MODEL }, fake.admin)
    expect(set.json).toMatchObject({ default: FAKE_MODEL, model: { id: FAKE_MODEL, default: true } })

    const unloaded = await call('POST', '/api/v1/admin/llm/models/unload', { model: 'other@2.0.0' }, fake.admin)
    expect(unloaded.json).toMatchObject({ id: 'other@2.0.0', loaded: false })
    const again = await call('POST', '/api/v1/admin/llm/models/unload', { model: 'other@2.0.0' }, fake.admin)
    expect(again.status).toBe(409)
    expect(again.json.error.code).toBe('model_not_loaded')
  })

  it('refuses a model that is not NAME@VERSION, and an unknown one', async () => {
    const bad = await call('POST', '/api/v1/admin/llm/models/load', { model: 'tiny' }, fake.admin)
    expect(bad.status).toBe(400)
    expect(bad.json.error.message).toMatch(/NAME@VERSION/)
    const unknown = await call('POST', '/api/v1/admin/llm/models/load', { model: 'nope@1.0.0' }, fake.admin)
    expect(unknown.status).toBe(404)
  })

  it('the OpenAPI document lists the inference routes', async () => {
    const openapi = await (await fetch(`${fake.url}/api/v1/openapi.json`)).json() as { paths: Record<string, unknown> }
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining(['/api/v1/llm/chat', '/api/v1/llm/embed', '/api/v1/admin/llm/models', '/v1/chat/completions', '/v1/embeddings', '/v1/models']))
  })
})
