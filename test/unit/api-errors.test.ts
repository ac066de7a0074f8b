import Fastify, { type FastifyInstance } from 'fastify'
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { EventNamespace, EventPayload, EventType } from '../../protocols/events.ts'
import { authPlugin } from '../../node/api/auth.ts'
import { installErrorHandlers } from '../../node/api/errors.ts'

// the same shapes as POST /api/v1/events: one event or a batch, a union zod reports branch by branch
const NewEvent = z.object({ namespace: EventNamespace, type: EventType, payload: EventPayload }).strict()
const Body = z.union([NewEvent, z.object({ events: z.array(NewEvent).min(1).max(1000) }).strict()])
const Query = z.object({ limit: z.coerce.number().int().min(1).max(1000).optional(), filter: z.union([z.string().max(8), z.array(z.string().max(8)).max(2)]).optional() })

const keys = { adminToken: 'admin-token-for-tests', secret: 'secret-for-tests' }

describe('API error bodies', () => {
  let app: FastifyInstance

  beforeAll(async () => {
    app = Fastify()
    app.setValidatorCompiler(validatorCompiler)
    app.setSerializerCompiler(serializerCompiler)
    installErrorHandlers(app)
    await app.register(authPlugin, { keys })
    app.withTypeProvider<ZodTypeProvider>().post('/api/v1/things', { config: { access: 'admin' }, schema: { body: Body, querystring: Query } }, async () => ({ ok: true }))
    await app.ready()
  })

  afterAll(async () => {
    await app?.close()
  })

  async function post (body: string, query = ''): Promise<{ status: number, error: { code: string, message: string } }> {
    const response = await app.inject({ method: 'POST', url: `/api/v1/things${query}`, headers: { authorization: `Bearer ${keys.adminToken}`, 'content-type': 'application/json' }, payload: body })
    return { status: response.statusCode, error: response.json().error }
  }

  it('names the missing field of an event', async () => {
    const { status, error } = await post(JSON.stringify({ namespace: 'lab', type: 't' }))
    expect(status).toBe(400)
    expect(error).toEqual({ code: 'invalid_request', message: 'body.payload: required' })
  })

  it('names the batch limit', async () => {
    const events = Array.from({ length: 1001 }, () => ({ namespace: 'lab', type: 't', payload: 1 }))
    const { error } = await post(JSON.stringify({ events }))
    expect(error).toEqual({ code: 'invalid_request', message: 'body.events: at most 1000 items' })
  })

  it('names fields inside a batch, unknown fields and custom messages once', async () => {
    expect((await post(JSON.stringify({ events: [{ namespace: 'lab', type: 't', payload: 1 }, { namespace: 'lab', type: 't' }] }))).error.message)
      .toBe('body.events[1].payload: required')
    expect((await post(JSON.stringify({ namespace: 'lab', type: 't', payload: 1, extra: true }))).error.message).toBe('body: unknown field "extra"')
    expect((await post(JSON.stringify({ namespace: 'Lab!', type: 't', payload: 1 }))).error.message).toMatch(/^body\.namespace: 1-63 of a-z/)
    expect((await post(JSON.stringify('x'))).error.message).toBe('body: expected object, received string')
    expect((await post(JSON.stringify({ events: [] }))).error.message).toBe('body.events: at least 1 items')
  })

  it('names query parameters', async () => {
    const body = JSON.stringify({ namespace: 'lab', type: 't', payload: 1 })
    expect((await post(body, '?limit=5000')).error.message).toBe('query parameter limit: at most 1000')
    expect((await post(body, '?filter=123456789')).error.message).toMatch(/^query parameter filter: at most 8 characters/)
  })

  it('answers malformed JSON with invalid_request, as docs/api.md says', async () => {
    const { status, error } = await post('{"namespace": "lab",')
    expect(status).toBe(400)
    expect(error.code).toBe('invalid_request')
  })

  it('answers an unknown path with 404 with or without a token', async () => {
    for (const headers of [{}, { authorization: 'Bearer nonsense' }, { authorization: `Bearer ${keys.adminToken}` }]) {
      const response = await app.inject({ method: 'GET', url: '/api/v1/no-such-thing', headers })
      expect(response.statusCode, JSON.stringify(headers)).toBe(404)
      expect(response.json().error.code).toBe('not_found')
    }
    // a route that exists still wants its token
    const known = await app.inject({ method: 'POST', url: '/api/v1/things', payload: {} })
    expect(known.statusCode).toBe(401)
  })
})
