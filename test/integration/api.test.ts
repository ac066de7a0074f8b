import { readFile, writeFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNamespaceToken, verifyToken } from '../../node/auth/index.ts'
import { tempDir, TestMesh, type TestNode } from '../helpers/mesh.ts'

/** A request with exactly the headers given (the mesh helper always sends `Bearer`). */
async function raw (node: TestNode, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number, contentType: string, body: any }> {
  const response = await fetch(`${node.url}${path}`, { method, headers, body })
  const text = await response.text()
  let parsed: any = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: response.status, contentType: response.headers.get('content-type') ?? '', body: parsed }
}

function expectError (response: { status: number, body: any }, status: number, code: string): void {
  expect(response.status, JSON.stringify(response.body)).toBe(status)
  expect(response.body).toEqual({ error: { code, message: expect.any(String) } })
  expect(response.body.error.message.length).toBeGreaterThan(0)
}

// One real `bkg start` process with the admin role; every test talks to it over HTTP.
describe('HTTP API of one node', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let node: TestNode
  let secret: string

  beforeAll(async () => {
    tmp = await tempDir('bkg-api-test-')
    mesh = await TestMesh.create(tmp.dir)
    node = await mesh.addNode('api-1', { roles: ['admin', 'member'], namespaces: ['lab'] })
    await node.start()
    secret = (await readFile(node.paths.tokenSecret, 'utf8')).trim()
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  const nsToken = (init: { namespace?: string, role?: 'reader' | 'writer' | 'admin', ttlMs?: number | null, now?: number } = {}): string =>
    createNamespaceToken(secret, { namespace: init.namespace ?? 'lab', role: init.role ?? 'reader', ttlMs: init.ttlMs ?? 3_600_000, now: init.now }).token

  it('health answers without a token', async () => {
    const res = await raw(node, 'GET', '/api/v1/health')
    expect(res.status).toBe(200)
    expect(res.contentType).toMatch(/application\/json/)
    expect(res.body).toEqual({ status: 'ok', peerId: node.peerId })
  })

  it('refuses /api/v1/node without a valid bearer token with 401 JSON', async () => {
    expectError(await raw(node, 'GET', '/api/v1/node'), 401, 'unauthorized')
    expectError(await raw(node, 'GET', '/api/v1/node', { authorization: 'Bearer wrong' }), 401, 'unauthorized')
    expectError(await raw(node, 'GET', '/api/v1/node', { authorization: 'Basic x' }), 401, 'unauthorized')
    expectError(await raw(node, 'GET', '/api/v1/node', { authorization: 'Bearer' }), 401, 'unauthorized')
    expectError(await raw(node, 'GET', '/api/v1/node', { authorization: `Basic ${node.token}` }), 401, 'unauthorized')
    const expired = nsToken({ ttlMs: 1000, now: Date.now() - 60_000 })
    expectError(await node.api('GET', '/api/v1/node', undefined, expired), 401, 'unauthorized')
    const foreign = createNamespaceToken('another-secret', { namespace: 'lab', role: 'admin', ttlMs: null }).token
    expectError(await node.api('GET', '/api/v1/node', undefined, foreign), 401, 'unauthorized')
  })

  it('the admin token reads the node', async () => {
    const res = await node.api('GET', '/api/v1/node')
    expect(res.status).toBe(200)
    expect(res.body.peerId).toBe(node.peerId)
    expect(res.body.name).toBe('api-1')
    expect(res.body.cert.roles).toEqual(expect.arrayContaining(['admin']))
    expect(res.body.cert.namespaces).toEqual(['lab'])
    expect(typeof res.body.version).toBe('string')
  })

  it('a namespace token reads but cannot act as the node admin', async () => {
    for (const role of ['reader', 'writer', 'admin'] as const) {
      const token = nsToken({ role })
      const info = await node.api('GET', '/api/v1/node', undefined, token)
      expect(info.status, role).toBe(200)
      expect(info.body.peerId).toBe(node.peerId)
      const peers = await node.api('GET', '/api/v1/peers?ping=false', undefined, token)
      expect(peers.status, role).toBe(200)
      expect(peers.body).toEqual([])
      expectError(await node.api('POST', '/api/v1/peers/dial', { peerId: node.peerId }, token), 403, 'forbidden')
      expectError(await node.api('POST', '/api/v1/tokens', { namespace: 'lab' }, token), 403, 'forbidden')
      expectError(await node.api('POST', '/api/v1/admin/crl', { pem: 'x' }, token), 403, 'forbidden')
    }
  })

  it('issues a namespace token with the admin token, and that token works', async () => {
    const res = await node.api('POST', '/api/v1/tokens', { namespace: 'lab', role: 'writer', ttl: '1h' })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body.namespace).toBe('lab')
    expect(res.body.role).toBe('writer')
    const expiresIn = Date.parse(res.body.expiresAt) - Date.now()
    expect(expiresIn).toBeGreaterThan(50 * 60_000)
    expect(expiresIn).toBeLessThanOrEqual(3_600_000)
    expect(verifyToken(res.body.token, { adminToken: node.token, secret })).toMatchObject({ kind: 'namespace', namespace: 'lab', role: 'writer' })
    const info = await node.api('GET', '/api/v1/node', undefined, res.body.token)
    expect(info.status).toBe(200)
    // the default role is reader; ttl never gives no expiry
    const forever = await node.api('POST', '/api/v1/tokens', { namespace: 'ops', ttl: 'never' })
    expect(forever.status).toBe(200)
    expect(forever.body).toMatchObject({ namespace: 'ops', role: 'reader', expiresAt: null })
  })

  it('refuses bad token requests with 400 JSON', async () => {
    expectError(await node.api('POST', '/api/v1/tokens', { namespace: 'UPPER' }), 400, 'invalid_request')
    expectError(await node.api('POST', '/api/v1/tokens', {}), 400, 'invalid_request')
    expectError(await node.api('POST', '/api/v1/tokens', { namespace: 'lab', role: 'wizard' }), 400, 'invalid_request')
    expectError(await node.api('POST', '/api/v1/tokens', { namespace: 'lab', extra: true }), 400, 'invalid_request')
    const badTtl = await node.api('POST', '/api/v1/tokens', { namespace: 'lab', ttl: 'soon' })
    expect(badTtl.status).toBe(400)
    expect(badTtl.body.error.message).toMatch(/duration/)
    expectError(await node.api('POST', '/api/v1/tokens', { namespace: 'lab', ttl: '0s' }), 400, 'invalid_request')
    expectError(await node.api('POST', '/api/v1/tokens', { namespace: 'lab', ttl: '100000000d' }), 400, 'invalid_request')
  })

  it('refuses bad dial requests with 400 JSON', async () => {
    expectError(await node.api('POST', '/api/v1/peers/dial', {}), 400, 'invalid_request')
    expectError(await node.api('POST', '/api/v1/peers/dial', { peerId: 'nope' }), 400, 'invalid_peer_id')
    expectError(await node.api('POST', '/api/v1/peers/dial', { addr: 'notamultiaddr' }), 400, 'invalid_multiaddr')
    expectError(await node.api('POST', '/api/v1/peers/dial', { peerId: node.peerId }), 400, 'invalid_request')
    expectError(await node.api('POST', '/api/v1/peers/dial', { peerId: 42 }), 400, 'invalid_request')
    expectError(await node.api('POST', '/api/v1/peers/dial', { peerId: node.peerId, port: 1 }), 400, 'invalid_request')
    const notJson = await raw(node, 'POST', '/api/v1/peers/dial', { authorization: `Bearer ${node.token}`, 'content-type': 'application/json' }, '{"peerId":')
    expect(notJson.status).toBe(400)
    expect(notJson.body.error.code).toEqual(expect.any(String))
    const lookup = await node.api('GET', '/api/v1/peers/not-a-peer-id/lookup')
    expectError(lookup, 400, 'invalid_peer_id')
  })

  it('answers unknown routes with 404 JSON', async () => {
    const res = await node.api('GET', '/api/v1/does-not-exist')
    expectError(res, 404, 'not_found')
    expect(res.body.error.message).toContain('/api/v1/does-not-exist')
    expectError(await node.api('DELETE', '/api/v1/health'), 404, 'not_found')
  })

  it('serves a public OpenAPI 3 document that lists the peer and node routes', async () => {
    const res = await raw(node, 'GET', '/api/v1/openapi.json')
    expect(res.status).toBe(200)
    expect(res.body.openapi).toMatch(/^3\./)
    expect(Object.keys(res.body.paths)).toEqual(expect.arrayContaining(['/api/v1/peers', '/api/v1/node', '/api/v1/peers/dial', '/api/v1/health', '/api/v1/tokens']))
    expect(res.body.paths['/api/v1/peers/dial'].post).toBeDefined()
  })

  it('exposes Prometheus metrics', async () => {
    const res = await raw(node, 'GET', '/metrics', { authorization: `Bearer ${node.token}` })
    expect(res.status).toBe(200)
    expect(res.contentType).toMatch(/text\/plain/)
    for (const name of ['bkg_peers_connected', 'bkg_admissions_total', 'bkg_dht_routing_table_size', 'bkg_gossip_messages_total']) {
      expect(res.body, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'))
    }
    expect(res.body).toMatch(/^bkg_peers_connected 0$/m)
    expectError(await raw(node, 'GET', '/metrics'), 401, 'unauthorized')
  })

  it('refuses a CRL that is not CA-signed', async () => {
    expectError(await node.api('POST', '/api/v1/admin/crl', { pem: 'garbage' }), 400, 'crl_untrusted')
    expectError(await node.api('POST', '/api/v1/admin/crl', { pem: '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n' }), 400, 'crl_untrusted')
    expectError(await node.api('POST', '/api/v1/admin/crl', {}), 400, 'invalid_request')
    const current = await node.api('GET', '/api/v1/admin/crl')
    expect(current.status).toBe(200)
    expect(current.body).toEqual({ number: null, revoked: [], pem: null })
  })
})

describe('HTTP API rate limit from config.json', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let node: TestNode

  beforeAll(async () => {
    tmp = await tempDir('bkg-api-rate-test-')
    mesh = await TestMesh.create(tmp.dir)
    node = await mesh.addNode('rate-1', { roles: ['member'] })
    await writeFile(node.paths.config, JSON.stringify({ http: { rateLimit: 5 } }))
    await node.start()
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('answers 429 rate_limited after 5 requests in a minute, per token and per address; health is never limited', async () => {
    const limited = (response: { status: number, body: any }): void => {
      expect(response.status, JSON.stringify(response.body)).toBe(429)
      expect(response.body.error.code).toBe('rate_limited')
      expect(response.body.error.message).toMatch(/requests per minute; retry in \d+ s/)
    }
    // a liveness probe answers whoever else shares its address
    for (let i = 0; i < 8; i++) expect((await node.api('GET', '/api/v1/health')).status).toBe(200)
    // failed logins count against the address, so token guessing is throttled
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) statuses.push((await node.api('GET', '/api/v1/node', undefined, 'wrong')).status)
    expect(statuses).toEqual([401, 401, 401, 401, 401])
    limited(await node.api('GET', '/api/v1/node', undefined, 'wrong'))
    const response = await fetch(`${node.url}/api/v1/node`)
    expect(response.status).toBe(429)
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0)
    await response.text()
    expect((await node.api('GET', '/api/v1/health')).status).toBe(200)
    // the admin token has a budget of its own, untouched by the address's, and as limited
    for (let i = 0; i < 5; i++) expect((await node.api('GET', '/api/v1/node')).status).toBe(200)
    limited(await node.api('GET', '/api/v1/peers?ping=false'))
  })
})
