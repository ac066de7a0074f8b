/**
 * API fuzz suite, HTTP half: every route of the node's own OpenAPI document (plus the S3 subset,
 * which the document hides) gets fast-check generated path params, query params, headers and
 * bodies, valid-shaped ones mixed with hostile ones, under every kind of token. Each answer must be
 * < 500 (bar the 5xx docs/api.md documents), each 4xx must carry the JSON error body (S3: the XML
 * <Error>), and the node must keep answering /api/v1/health. Failures are collected, not stopped
 * at, replayed one by one with the node's log, and listed at the end. Seed, counts and replaying
 * one route: see test/fuzz/kit.ts (BKG_FUZZ_SEED, BKG_FUZZ_RUNS, BKG_FUZZ_ONLY) and docs/api.md "Fuzzing".
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatAmzDate } from '../../node/api/s3/sigv4.ts'
import { signRequest } from '../helpers/sigv4-client.ts'
import { runBkgSync } from '../helpers/cli.ts'
import {
  contractProblem, deepJson, describeCase, errorCodeOf, fuzzScale, fuzzSeed, hostileJsonValue, hostileString, onlyFilter,
  pool, RawJson, send, startFuzzNode, summariseLog, toJsonText, truncate, urlPart, urlValue, RawUrlPart,
  type FuzzNode, type HttpAnswer, type HttpCase
} from './kit.ts'

const DEFAULT_CASES_PER_OPERATION = 40
/** operations whose handlers do the most with their input get more cases */
const HEAVY = new Set(['POST /api/v1/events', 'GET /api/v1/events', 'GET /api/v1/events/stream', 'PUT /api/v1/storage/objects/{bucket}/{*}',
  'GET /api/v1/storage/buckets/{bucket}/objects', 'GET /s3/{bucket}', 'PUT /s3/{bucket}/{*}', 'POST /api/v1/models', 'POST /s3/{bucket}/{*}'])
/** answers that wait for a DHT lookup to time out */
const SLOW = new Set(['GET /api/v1/peers/{peerId}/lookup', 'GET /api/v1/content/{cid}/providers', 'POST /api/v1/peers/dial'])
const CHUNK = 100
const CONCURRENCY = 6
const SEED = fuzzSeed()
const SCALE = fuzzScale(2400)

type TokenKind = 'admin' | 'ns-reader' | 'ns-writer' | 'ns-admin' | 'other-ns-writer' | 'expired' | 'invalid' | 'malformed' | 'none'
type S3AuthKind = 's3-writer' | 's3-reader' | 's3-admin' | 's3-unknown-key' | 's3-bad-signature' | 's3-none' | 's3-garbage-header'

interface Operation {
  operation: string
  method: string
  template: string
  params: Array<{ in: 'path' | 'query', name: string, required: boolean, schema: any }>
  body?: { kind: 'json', schema: any } | { kind: 'bytes' }
  s3?: boolean
}

interface Context {
  peerId: string
  addr: string
  eventIds: string[]
  cids: string[]
  jobIds: string[]
  packageBytes: Buffer
}

interface Failure { key: string, item: HttpCase, problem: string, status?: number, log?: string }

/** Documented 5xx answers (docs/api.md), not bugs: a dial that fails, and S3 operations outside the subset. */
function documented5xx (item: HttpCase, answer: HttpAnswer): boolean {
  if (item.operation === 'POST /api/v1/peers/dial' && answer.status === 502) return errorCodeOf(answer) === 'dial_failed'
  if (item.s3 === true && answer.status === 501) return errorCodeOf(answer) === 'NotImplemented' || item.method === 'HEAD'
  return false
}

// ------------------------------------------------------------------ operations

function operationsOf (doc: any): Operation[] {
  const operations: Operation[] = []
  for (const [template, methods] of Object.entries<any>(doc.paths)) {
    for (const [method, spec] of Object.entries<any>(methods)) {
      const content = spec.requestBody?.content ?? {}
      const body = content['application/json'] != null
        ? { kind: 'json' as const, schema: content['application/json'].schema }
        : (method === 'post' || method === 'put') ? { kind: 'bytes' as const } : undefined
      operations.push({
        operation: `${method.toUpperCase()} ${template}`,
        method: method.toUpperCase(),
        template,
        params: (spec.parameters ?? []).filter((p: any) => p.in === 'path' || p.in === 'query'),
        body
      })
      // HEAD routes Fastify adds for GET are not in the document, but answer too
      if (method === 'get' && template.startsWith('/api/v1/storage/objects/')) {
        operations.push({ operation: `HEAD ${template}`, method: 'HEAD', template, params: (spec.parameters ?? []).filter((p: any) => p.in === 'path' || p.in === 'query') })
      }
    }
  }
  const str = (maxLength = 1024): any => ({ type: 'string', maxLength })
  const path = (name: string): Operation['params'][number] => ({ in: 'path', name, required: true, schema: str(63) })
  const query = (name: string, schema: any = str()): Operation['params'][number] => ({ in: 'query', name, required: false, schema })
  const s3 = (method: string, template: string, params: Operation['params'], body?: Operation['body']): Operation =>
    ({ operation: `${method} ${template}`, method, template, params, body, s3: true })
  const key = { in: 'path' as const, name: '*', required: true, schema: str(1024) }
  const listQuery = [query('list-type', { type: 'string', enum: ['2', '1'] }), query('prefix'), query('delimiter'), query('max-keys', { type: 'integer', minimum: 0, maximum: 1000 }),
    query('continuation-token'), query('start-after'), query('encoding-type', { type: 'string', enum: ['url'] })]
  operations.push(
    s3('GET', '/s3/', []),
    s3('PUT', '/s3/{bucket}', [path('bucket')]),
    s3('HEAD', '/s3/{bucket}', [path('bucket')]),
    s3('DELETE', '/s3/{bucket}', [path('bucket')]),
    s3('GET', '/s3/{bucket}', [path('bucket'), ...listQuery]),
    s3('PUT', '/s3/{bucket}/{*}', [path('bucket'), key, query('partNumber', { type: 'integer', minimum: 1, maximum: 10000 }), query('uploadId')], { kind: 'bytes' }),
    s3('GET', '/s3/{bucket}/{*}', [path('bucket'), key]),
    s3('HEAD', '/s3/{bucket}/{*}', [path('bucket'), key]),
    s3('DELETE', '/s3/{bucket}/{*}', [path('bucket'), key, query('uploadId')]),
    s3('POST', '/s3/{bucket}/{*}', [path('bucket'), key, query('uploads', { type: 'string', enum: [''] }), query('uploadId')], { kind: 'bytes' }),
    // not in the document: the WebSocket route answered as plain HTTP, and paths that do not exist
    { operation: 'GET /realtime', method: 'GET', template: '/realtime', params: [query('token')] },
    { operation: 'GET /api/v1/{unknown}', method: 'GET', template: '/api/v1/{unknown}', params: [path('unknown')] }
  )
  return operations
}

// ------------------------------------------------------------------ values

/** Values known to exist on the node, so valid-shaped requests reach past "not found". */
function hints (ctx: Context, method: string): Record<string, fc.Arbitrary<unknown>> {
  const deleting = method === 'DELETE'
  const keys = ['a.txt', 'dir/b.bin', 'dir/', 'fresh/x.json', ...(deleting ? [] : ['keep/anchor', 'model.bin'])]
  return {
    namespace: fc.constantFrom('alpha', 'alpha', 'alpha', 'beta', 'gamma'),
    name: fc.constantFrom(...(deleting ? ['fuzz'] : ['keep', 'fuzz']), 'nope', 'fuzz-bucket', 'new-bucket'),
    version: fc.constantFrom('1.0.0', '2.0.0'),
    bucket: fc.constantFrom(...(deleting ? [] : ['fuzz-bucket']), 'spare-bucket', 'nope-bucket', 'new-bucket'),
    '*': fc.constantFrom(...keys),
    peerId: fc.constantFrom(ctx.peerId, '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN', 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N'),
    addr: fc.constantFrom('/ip4/127.0.0.1/tcp/1', ctx.addr, '/dns4/localhost/tcp/1', '/ip4/127.0.0.1/tcp/1/p2p/' + ctx.peerId),
    cid: fc.constantFrom(...ctx.cids, 'bafkqaaa', 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N'),
    id: fc.constantFrom(...ctx.jobIds, '1', '0'),
    topic: fc.constantFrom('bkg-fuzz', 'lab/chat', 'x'),
    after: fc.constantFrom(...ctx.eventIds, '1', '0', '99999999999999999999999999', '18446744073709551616', '9223372036854775807'),
    type: fc.constantFrom('t.one', 'fuzz', 'a:b/c'),
    filter: fc.constantFrom('n=eq.1', 'n=in.(1,2)', 'a.b=gt.2', 'n=lte.99999999999999999999999999', 'x=eq.\u0000', 'n=bogus.1', '=eq.1'),
    ttl: fc.constantFrom('1h', '30d', 'never', '0s', '99999999999999999999d', '-1s', '1e3s'),
    data: fc.constantFrom('hello', 'aGVsbG8=', '\u0000', '\ud800', 'x'.repeat(300_000)),
    prefix: fc.constantFrom('', 'dir/', 'a', 'keep/'),
    delimiter: fc.constantFrom('/', '', '//'),
    replicas: fc.constantFrom(1, 2, 64),
    limit: fc.constantFrom(1, 1000, 10),
    wait: fc.constantFrom(0, 10, 100),
    max: fc.constantFrom(1, 20, 100),
    token: fc.constantFrom('x')
  }
}

function resolveRef (doc: any, schema: any): any {
  if (typeof schema?.$ref !== 'string') return schema
  const name = schema.$ref.split('/').at(-1)
  // an unresolvable $ref (the document names components it does not carry) is treated as any JSON
  return doc.components?.schemas?.[name] ?? {}
}

/** A value of the schema's shape (known-good values first where the field name has some). */
function schemaArb (doc: any, raw: any, name: string, known: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  const schema = resolveRef(doc, raw) ?? {}
  const base = shapeArb(doc, schema, known)
  const hint = known[name]
  return hint != null ? fc.oneof({ weight: 3, arbitrary: hint }, { weight: 1, arbitrary: base }) : base
}

function shapeArb (doc: any, schema: any, known: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  const variants = schema.anyOf ?? schema.oneOf
  if (Array.isArray(variants)) return fc.oneof(...variants.map((variant: any) => schemaArb(doc, variant, '', known)))
  if (Array.isArray(schema.enum)) return fc.constantFrom(...schema.enum)
  switch (schema.type) {
    case 'string': {
      const max = Math.min(schema.maxLength ?? 40, 64)
      const min = Math.min(schema.minLength ?? 0, max)
      if (typeof schema.pattern === 'string') return fc.stringMatching(new RegExp(schema.pattern)).map((s) => s.slice(0, schema.maxLength ?? 1024)).filter((s) => s.length >= min)
      return fc.string({ minLength: min, maxLength: max })
    }
    case 'integer': return fc.integer({ min: schema.minimum ?? -1000, max: schema.maximum ?? 1_000_000 })
    case 'number': return fc.double({ min: schema.minimum ?? -1e6, max: schema.maximum ?? 1e6, noNaN: true })
    case 'boolean': return fc.boolean()
    case 'array': return fc.array(schemaArb(doc, schema.items ?? {}, '', known), { minLength: schema.minItems ?? 0, maxLength: Math.min(schema.maxItems ?? 4, 4) })
    case 'object': {
      const properties: Record<string, any> = schema.properties ?? {}
      const model: Record<string, fc.Arbitrary<unknown>> = {}
      for (const [key, value] of Object.entries(properties)) model[key] = schemaArb(doc, value, key, known)
      return fc.record(model, { requiredKeys: (schema.required ?? []).filter((key: string) => key in model) })
    }
    default:
      // payloads: any JSON, realistic objects, and objects carrying a hostile value somewhere inside
      return fc.oneof(
        { weight: 2, arbitrary: fc.record({ n: fc.integer(), a: fc.record({ b: fc.integer() }), s: fc.string({ maxLength: 10 }) }) },
        { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
        { weight: 2, arbitrary: fc.tuple(hostileJsonValue, hostileString).map(([value, key]) => ({ n: 1, a: { [key]: value }, s: value })) },
        { weight: 1, arbitrary: hostileJsonValue }
      )
  }
}

/** Makes a valid-shaped object hostile in one place: a field replaced, added or dropped, or a nested field. */
function mutate (value: unknown, how: number, hostile: unknown, extraKey: string): unknown {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return hostile
  const keys = Object.keys(value)
  const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) }
  if (keys.length === 0 || how % 4 === 3) {
    copy[extraKey] = hostile
    return copy
  }
  const key = keys[how % keys.length]
  if (how % 4 === 2) {
    delete copy[key]
    return copy
  }
  if (Array.isArray(copy[key]) && (copy[key] as unknown[]).length > 0) {
    const items = [...(copy[key] as unknown[])]
    items[0] = mutate(items[0], Math.floor(how / 4), hostile, extraKey)
    copy[key] = items
    return copy
  }
  copy[key] = hostile
  return copy
}

interface Body { bytes: Buffer, contentType?: string, note?: string }

function jsonBodyArb (doc: any, schema: any, known: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Body> {
  const valid = schemaArb(doc, schema, '', known)
  const json = (value: unknown, note?: string): Body => ({ bytes: Buffer.from(toJsonText(value), 'utf8'), contentType: 'application/json', note })
  const raw = (text: string | Buffer, contentType: string | undefined, note?: string): Body => ({ bytes: Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8'), contentType, note })
  return fc.oneof(
    { weight: 25, arbitrary: valid.map((value) => json(value)) },
    {
      weight: 40,
      arbitrary: fc.tuple(valid, fc.nat(), hostileJsonValue, fc.constantFrom('namespace', 'x', '__proto__', 'payload', '')).map(([value, how, hostile, extra]) => {
        const mutated = mutate(value, how, hostile, extra)
        const note = hostile instanceof RawJson ? `${truncate(toJsonText(mutate(value, how, `<${hostile.label}>`, extra)), 300)}` : undefined
        return json(mutated, note)
      })
    },
    { weight: 8, arbitrary: fc.constantFrom('null', '[]', '"x"', '1', 'true', '{}', '99999999999999999999999999', '[{}]').map((text) => raw(text, 'application/json')) },
    {
      weight: 8,
      arbitrary: fc.constantFrom<string | Buffer>('{', '{"a":', '{"a":1,}', "{'a':1}", '\u0000', 'nul', '{"a":1}{"b":2}', '{"a":"\\ud800"}', '{"a":"\\u0000"}', '{"\\u0000":1}',
        '{"a":1e999999}', '{"a":"x' + '\\'.repeat(3) + '"}', Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), Buffer.from('{"a":"\xed\xa0\x80"}', 'latin1'))
        .map((text) => raw(text, 'application/json'))
    },
    { weight: 6, arbitrary: fc.constantFrom<string | undefined>('application/json', undefined, 'text/plain').map((type) => raw('', type, '(empty)')) },
    {
      weight: 8,
      arbitrary: fc.tuple(fc.constantFrom(2000, 3000, 10_000, 100_000), fc.constantFrom<'array' | 'object' | 'mixed'>('array', 'object', 'mixed')).map(([depth, kind]) => {
        const deep = deepJson(depth, kind)
        return raw(deep.text, 'application/json', deep.label)
      })
    },
    {
      weight: 10,
      arbitrary: fc.tuple(valid, fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml',
        'application/json; charset=utf-16', 'application/json; charset=latin1', '*/*', 'application/jsonx', 'application/octet-stream', ';;;', 'application/json\u00ff'))
        .map(([value, type]) => raw(toJsonText(value), type))
    },
    {
      weight: 2,
      arbitrary: fc.constantFrom('string', 'deep').map((kind) => kind === 'string'
        ? raw(`{"namespace":"alpha","type":"t","payload":{"s":"${'x'.repeat(1_100_000)}"},"name":"${'y'.repeat(10)}"}`, 'application/json', '1.1 MB JSON (over the 1 MiB body limit)')
        : raw('['.repeat(900_000) + ']'.repeat(900_000), 'application/json', '[×900000] (1.8 MB)'))
    }
  )
}

function bytesBodyArb (ctx: Context): fc.Arbitrary<Body> {
  const pkg = ctx.packageBytes
  return fc.oneof(
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 4096 }).map((bytes) => ({ bytes: Buffer.from(bytes), contentType: 'application/octet-stream', note: `${bytes.length} random bytes` })) },
    { weight: 1, arbitrary: fc.constantFrom<Body>({ bytes: Buffer.alloc(0), contentType: 'application/octet-stream', note: '(empty)' }, { bytes: Buffer.alloc(0), note: '(empty, no content type)' }) },
    { weight: 2, arbitrary: fc.constant<Body>({ bytes: pkg, contentType: 'application/octet-stream', note: 'the valid keep@1.0.0 package' }) },
    {
      weight: 4,
      arbitrary: fc.tuple(fc.nat(pkg.length - 1), fc.integer({ min: 1, max: 255 }), fc.boolean()).map(([at, xor, cut]) => {
        const bytes = Buffer.from(pkg)
        if (cut) return { bytes: bytes.subarray(0, at), contentType: 'application/octet-stream', note: `the valid package cut at byte ${at}` }
        bytes[at] ^= xor
        return { bytes, contentType: 'application/octet-stream', note: `the valid package with byte ${at} xor ${xor}` }
      })
    },
    { weight: 1, arbitrary: fc.constant<Body>({ bytes: Buffer.from(pkg.toString('latin1').replace(/"version":"[^"]*"/, `"version":"${'9'.repeat(30)}"`), 'latin1'), contentType: 'application/octet-stream', note: 'package with its manifest version edited' }) },
    { weight: 1, arbitrary: fc.constantFrom('application/json', 'text/plain', 'multipart/form-data', 'application/x-bkg').map((type) => ({ bytes: Buffer.from('{"a":1}'), contentType: type, note: `{"a":1} as ${type}` })) },
    { weight: 1, arbitrary: fc.constant<Body>({ bytes: randomishBytes(1_100_000), contentType: 'application/octet-stream', note: '1.1 MB of bytes' }) }
  )
}

function randomishBytes (size: number): Buffer {
  const bytes = Buffer.alloc(size)
  for (let i = 0; i < size; i++) bytes[i] = (i * 2654435761) >>> 24
  return bytes
}

// ------------------------------------------------------------------ cases

interface Draft {
  path: Record<string, string | RawUrlPart>
  query: Array<[string, string | RawUrlPart]>
  token: TokenKind
  s3auth: S3AuthKind
  body?: Body
  headers: Record<string, string>
}

/** header values Node's client can send: tab, printable ASCII and Latin-1 */
const headerValue = hostileString.map((s) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?').slice(0, 8000))

function caseArb (doc: any, op: Operation, ctx: Context): fc.Arbitrary<Draft> {
  const known = hints(ctx, op.method)
  const pathParams: Record<string, fc.Arbitrary<string | RawUrlPart>> = {}
  const queryParams: Array<fc.Arbitrary<Array<[string, string | RawUrlPart]>>> = []
  for (const param of op.params) {
    const asText = schemaArb(doc, param.schema, param.name, known).map((value) => typeof value === 'string' ? value : JSON.stringify(value) ?? '')
    const value = urlValue(asText)
    if (param.in === 'path') {
      pathParams[param.name] = value
    } else {
      queryParams.push(fc.oneof(
        { weight: param.required ? 8 : 4, arbitrary: value.map((v) => [[param.name, v]] as Array<[string, string | RawUrlPart]>) },
        { weight: param.required ? 1 : 4, arbitrary: fc.constant<Array<[string, string | RawUrlPart]>>([]) },
        { weight: 1, arbitrary: fc.array(value, { minLength: 2, maxLength: 20 }).map((values) => values.map((v) => [param.name, v] as [string, string | RawUrlPart])) }
      ))
    }
  }
  const extraQuery = fc.oneof(
    { weight: 8, arbitrary: fc.constant([]) },
    { weight: 1, arbitrary: fc.tuple(hostileString, urlValue(fc.string())).map(([name, value]) => [[name, value]] as Array<[string, string | RawUrlPart]>) },
    { weight: 1, arbitrary: fc.constantFrom<Array<[string, string | RawUrlPart]>>([['a', 'x'.repeat(12_000)]], [['__proto__', 'x']], [['namespace[]', 'alpha']], [['limit', '1e3']]) }
  )
  const token = fc.constantFrom<TokenKind>('admin', 'admin', 'admin', 'ns-writer', 'ns-writer', 'ns-reader', 'ns-admin', 'ns-admin', 'other-ns-writer', 'expired', 'invalid', 'malformed', 'none')
  const s3auth = fc.constantFrom<S3AuthKind>('s3-writer', 's3-writer', 's3-writer', 's3-admin', 's3-admin', 's3-reader', 's3-unknown-key', 's3-bad-signature', 's3-none', 's3-garbage-header')
  const body: fc.Arbitrary<Body | undefined> = op.body?.kind === 'json'
    ? jsonBodyArb(doc, op.body.schema, known)
    : op.body?.kind === 'bytes'
      ? bytesBodyArb(ctx)
      : op.method === 'HEAD' ? fc.constant(undefined) : fc.oneof({ weight: 9, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant<Body>({ bytes: Buffer.from('{"a":'), contentType: 'application/json', note: 'malformed JSON on a bodiless route' }) })
  const headers = routeHeaders(op)
  return fc.record({
    path: fc.record(pathParams),
    query: fc.tuple(fc.tuple(...queryParams), extraQuery).map(([lists, extra]) => [...lists.flat(), ...extra]),
    token,
    s3auth,
    body,
    headers
  })
}

/** Headers the route reads, valid and hostile. */
function routeHeaders (op: Operation): fc.Arbitrary<Record<string, string>> {
  const optional = (name: string, value: fc.Arbitrary<string>): fc.Arbitrary<Record<string, string>> =>
    fc.option(value.map((v) => ({ [name]: v })), { nil: {} as Record<string, string>, freq: 2 })
  const merge = (...parts: Array<fc.Arbitrary<Record<string, string>>>): fc.Arbitrary<Record<string, string>> => fc.tuple(...parts).map((all) => Object.assign({}, ...all))
  const numeric = fc.constantFrom('0', '1', '99999999999999999999999999', '18446744073709551616', '-1', '1e308', 'NaN', '9'.repeat(1000), '00000000000000000000001')
  if (op.operation === 'GET /api/v1/events/stream') return merge(optional('last-event-id', fc.oneof(numeric, headerValue)))
  if (op.operation === 'PUT /api/v1/storage/objects/{bucket}/{*}') return merge(optional('x-checksum-sha256', fc.oneof(fc.constantFrom('0'.repeat(64), 'Z'.repeat(64), ''), headerValue)))
  if (op.s3 === true && op.method === 'GET') return merge(optional('range', fc.oneof(fc.constantFrom('bytes=0-0', 'bytes=-1', 'bytes=5-1', 'bytes=99999999999999999999999999-', 'bytes=0-99999999999999999999999999', 'bytes=-0', 'bytes=1e3-', 'bytes=0-1,3-4', 'items=0-1'), headerValue)))
  if (op.s3 === true && (op.method === 'PUT' || op.method === 'POST')) {
    return merge(
      optional('content-md5', fc.oneof(fc.constantFrom('1B2M2Y8AsgTpgAmY7PhCfg==', 'AAAA', '==', 'x'.repeat(100)), headerValue)),
      optional('x-amz-checksum-crc32', fc.oneof(fc.constantFrom('AAAAAA==', '////', 'x'), headerValue)),
      optional('x-amz-meta-note', fc.oneof(fc.constantFrom('x'.repeat(3000), 'ok'), headerValue)),
      optional('x-amz-content-sha256', fc.constantFrom('STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER', 'z'.repeat(64), '')),
      optional('x-amz-decoded-content-length', numeric),
      optional('x-amz-trailer', fc.constantFrom('x-amz-checksum-crc32', 'x-amz-checksum-sha256', 'bogus', ''))
    )
  }
  return fc.constant({})
}

interface Keys { accessKeyId: string, secretAccessKey: string }

interface Credentials {
  tokens: Record<Exclude<TokenKind, 'none' | 'malformed'>, string>
  s3: { writer: Keys, reader: Keys, admin: Keys }
}

function buildCase (op: Operation, draft: Draft, credentials: Credentials, baseUrl: string): HttpCase {
  let path = op.template.replace(/\{([^}]+)\}/g, (_m, name: string) => {
    const value = draft.path[name]
    if (value == null) return ''
    // keys are paths: a valid one keeps its slashes, a hostile one is one encoded segment
    if (name === '*' && typeof value === 'string' && /^[\w./-]*$/.test(value)) return value.split('/').map((segment) => urlPart(segment)).join('/')
    return urlPart(value)
  })
  const query = draft.query.map(([name, value]) => `${urlPart(name)}=${urlPart(value)}`).join('&')
  if (query !== '') path += `?${query}`
  const headers: Record<string, string> = { ...draft.headers }
  if (draft.body?.contentType != null) headers['content-type'] = draft.body.contentType
  let token: string
  if (op.s3 === true) {
    token = signS3(op, draft, credentials, baseUrl, path, headers)
  } else {
    token = draft.token
    if (draft.token === 'malformed') headers.authorization = 'Basic YWRtaW46YWRtaW4='
    else if (draft.token !== 'none') headers.authorization = `Bearer ${credentials.tokens[draft.token]}`
    if (op.template === '/realtime' && draft.token !== 'none' && draft.token !== 'malformed') headers.authorization = `Bearer ${credentials.tokens[draft.token]}`
  }
  return { operation: op.operation, method: op.method, path, headers, body: draft.body?.bytes, bodyNote: draft.body?.note, token, s3: op.s3 }
}

/** SigV4 as an S3 client signs (or a deliberately broken version of it); returns the auth kind. */
function signS3 (op: Operation, draft: Draft, credentials: Credentials, baseUrl: string, path: string, headers: Record<string, string>): string {
  const kind = draft.s3auth
  if (kind === 's3-none') return kind
  if (kind === 's3-garbage-header') {
    headers.authorization = 'AWS4-HMAC-SHA256 Credential=/, SignedHeaders=, Signature=' + 'g'.repeat(64)
    return kind
  }
  const keys = kind === 's3-reader' ? credentials.s3.reader : kind === 's3-admin' ? credentials.s3.admin : kind === 's3-unknown-key' ? { accessKeyId: 'AKIAFUZZUNKNOWN00000', secretAccessKey: 'x' } : credentials.s3.writer
  const date = new Date()
  const [rawPath, query = ''] = path.split(/\?(.*)/s)
  headers.host = new URL(baseUrl).host
  headers['x-amz-date'] = formatAmzDate(date)
  headers['x-amz-content-sha256'] ??= draft.body != null && draft.body.bytes.length < 100_000 ? createHash('sha256').update(draft.body.bytes).digest('hex') : 'UNSIGNED-PAYLOAD'
  try {
    headers.authorization = signRequest({ method: op.method, path: rawPath, query, headers, payloadHash: headers['x-amz-content-sha256'], accessKeyId: keys.accessKeyId, secret: keys.secretAccessKey, region: 'us-east-1', date })
  } catch {
    headers.authorization = `AWS4-HMAC-SHA256 Credential=${keys.accessKeyId}/${formatAmzDate(date).slice(0, 8)}/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=${'0'.repeat(64)}`
    return `${kind} (unsignable: signer threw, sent a wrong signature)`
  }
  if (kind === 's3-bad-signature') headers.authorization = headers.authorization.replace(/Signature=[0-9a-f]{4}/, 'Signature=0000')
  return kind
}

// ------------------------------------------------------------------ the suite

describe('API fuzz (HTTP, driven by GET /api/v1/openapi.json)', () => {
  let fz: FuzzNode
  let doc: any
  let ctx: Context
  let credentials: Credentials
  let workDir: string

  beforeAll(async () => {
    fz = await startFuzzNode('fuzz-http')
    const admin = fz.node.token
    const api = async (method: string, path: string, body?: unknown, token = admin): Promise<any> => {
      const answer = await fz.node.api(method, path, body, token)
      if (answer.status >= 300) throw new Error(`setup: ${method} ${path} answered ${answer.status} ${JSON.stringify(answer.body)}`)
      return answer.body
    }
    const token = async (namespace: string, role: string, ttl = '1d'): Promise<string> => (await api('POST', '/api/v1/tokens', { namespace, role, ttl })).token
    const expired = await token('alpha', 'writer', '1s')
    const [reader, writer, nsAdmin, other] = await Promise.all([token('alpha', 'reader'), token('alpha', 'writer'), token('alpha', 'admin'), token('beta', 'writer')])
    credentials = {
      tokens: { admin, 'ns-reader': reader, 'ns-writer': writer, 'ns-admin': nsAdmin, 'other-ns-writer': other, expired, invalid: 'bkg_not-a-real-token' },
      s3: {
        writer: await api('POST', '/api/v1/storage/credentials', { namespace: 'alpha', role: 'writer' }),
        reader: await api('POST', '/api/v1/storage/credentials', { namespace: 'alpha', role: 'reader' }),
        admin: await api('POST', '/api/v1/storage/credentials', { namespace: 'alpha', role: 'admin' })
      }
    }
    // state the fuzz can find: buckets whose anchor objects keep them non-empty, events, two models, jobs
    for (const bucket of ['fuzz-bucket', 'spare-bucket']) {
      await api('POST', '/api/v1/storage/buckets', { name: bucket, namespace: 'alpha' })
      for (const key of ['keep/anchor', 'a.txt', 'dir/b.bin']) {
        const put = await fz.node.api('PUT', `/api/v1/storage/objects/${bucket}/${key}?namespace=alpha`, undefined, admin)
        if (put.status !== 200) throw new Error(`setup: PUT ${bucket}/${key} answered ${put.status}`)
      }
    }
    const events = await api('POST', '/api/v1/events', { events: [1, 2, 3].map((n) => ({ namespace: 'alpha', type: 't.one', payload: { n, a: { b: n } } })) })
    workDir = join(fz.node.paths.dir, '..', 'fuzz-work')
    await mkdir(join(workDir, 'model'), { recursive: true })
    await writeFile(join(workDir, 'model', 'model.bin'), randomBytes(4096))
    const cids: string[] = []
    let packageBytes = Buffer.alloc(0)
    for (const name of ['keep', 'fuzz']) {
      const out = join(workDir, `${name}.bkg`)
      const packed = runBkgSync(['model', 'pack', join(workDir, 'model'), '--name', name, '--version', '1.0.0', '--licence', 'MIT', '--data', fz.node.paths.dir, '--out', out], workDir)
      if (packed.code !== 0) throw new Error(`setup: model pack failed: ${packed.stderr}`)
      const bytes = await readFile(out)
      const published = await send(fz.url(), { method: 'POST', path: '/api/v1/models', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/octet-stream' }, body: bytes })
      if (published.status >= 300) throw new Error(`setup: publish ${name} answered ${published.status} ${published.body.toString()}`)
      cids.push(...JSON.parse(published.body.toString()).files.map((file: { cid: string }) => file.cid))
      if (name === 'keep') packageBytes = bytes
    }
    const job = await api('POST', '/api/v1/replication', { name: 'keep', version: '1.0.0', namespace: 'alpha', replicas: 1 })
    const pull = await api('POST', '/api/v1/models/pulls', { name: 'absent-model' })
    ctx = {
      peerId: fz.node.peerId,
      addr: fz.node.addrs[0],
      eventIds: events.events.flatMap((event: { id: string, localId: number }) => [event.id, String(event.localId)]),
      cids,
      jobIds: [String(job.id), String(pull.id)],
      packageBytes
    }
    const openapi = await send(fz.url(), { method: 'GET', path: '/api/v1/openapi.json', headers: {} })
    expect(openapi.status).toBe(200)
    doc = JSON.parse(openapi.body.toString('utf8'))
    // let the 1 s token expire
    await new Promise((resolve) => setTimeout(resolve, 1100))
  }, 120_000)

  afterAll(async () => {
    await fz?.close()
  })

  it('answers every generated request without a 5xx, with the error contract, and stays up', async () => {
    const started = Date.now()
    const only = onlyFilter()
    const operations = operationsOf(doc).filter((op) => only(op.operation))
    expect(operations.length).toBeGreaterThan(0)
    const perOperation: HttpCase[][] = operations.map((op, index) => {
      // a well-formed DHT lookup waits 10-15 s for its timeout whatever it is sent: fewer of those
      const weight = HEAVY.has(op.operation) ? 3 : SLOW.has(op.operation) ? 0.3 : 1
      const runs = Math.max(1, Math.round(weight * DEFAULT_CASES_PER_OPERATION * SCALE))
      // drafts are sampled now (reproducible from the seed), signed when sent (S3 signatures carry the time)
      return fc.sample(caseArb(doc, op, ctx), { seed: SEED + index * 7919, numRuns: runs }).map((draft) => ({ op, draft }) as any)
    })
    // interleave the operations so every chunk mixes routes
    const queue: Array<{ op: Operation, draft: Draft }> = []
    for (let round = 0; perOperation.some((list) => list.length > round); round++) {
      for (const list of perOperation) if (list[round] != null) queue.push(list[round] as any)
    }
    process.stdout.write(`[fuzz http] seed ${SEED} (BKG_FUZZ_SEED), ${queue.length} cases over ${operations.length} operations (BKG_FUZZ_RUNS scale ${SCALE})\n`)

    const failures: Failure[] = []
    const statuses = new Map<string, number>()
    const record = (failure: Failure): void => { failures.push(failure) }
    let sent = 0
    let isolationMs = 0
    const timings = new Map<string, { total: number, max: number, count: number }>()

    const runCase = async ({ op, draft }: { op: Operation, draft: Draft }, items: HttpCase[], deferred: Failure[]): Promise<void> => {
      const item = buildCase(op, draft, credentials, fz.url())
      items.push(item)
      sent++
      try {
        const t0 = Date.now()
        const answer = await sendWithRetry(fz.url(), item)
        const took = Date.now() - t0
        const timing = timings.get(item.operation) ?? { total: 0, max: 0, count: 0 }
        timings.set(item.operation, { total: timing.total + took, max: Math.max(timing.max, took), count: timing.count + 1 })
        statuses.set(`${item.operation} ${answer.status}`, (statuses.get(`${item.operation} ${answer.status}`) ?? 0) + 1)
        const problem = contractProblem(item, answer, documented5xx)
        // a node shutting down after a crash answers 503 to what is still in flight: that is the crash's too
        if (problem != null && answer.status === 503) deferred.push({ key: `${item.operation} → ${problem} ${errorCodeOf(answer)}`, item, problem, status: answer.status })
        else if (problem != null) record({ key: failureKey(item, problem, answer), item, problem, status: answer.status })
      } catch (err) {
        const message = (err as Error).message
        // a body over the limit may be refused before it is all sent: the server answers and closes
        if ((item.body?.length ?? 0) > 1024 * 1024 && /EPIPE|ECONNRESET|socket hang up/.test(message)) return
        deferred.push({ key: `${item.operation} → no HTTP answer (${message.replace(/\d+ ms/, 'N ms')})`, item, problem: message })
      }
    }

    // DHT lookups of well-formed ids wait for their timeout (10-15 s) by design: they run in a lane
    // of their own, so the chunks (and their health checks) do not wait for them
    const slowQueue = queue.filter(({ op }) => SLOW.has(op.operation))
    const fastQueue = queue.filter(({ op }) => !SLOW.has(op.operation))
    const slowLane = pool(slowQueue, 8, async (entry) => {
      const deferred: Failure[] = []
      await runCase(entry, [], deferred)
      if (deferred.length > 0 && (await fz.healthy()).ok) for (const failure of deferred) record(failure)
    })

    for (let offset = 0; offset < fastQueue.length; offset += CHUNK) {
      const chunk = fastQueue.slice(offset, offset + CHUNK)
      const items: HttpCase[] = []
      const chunkErrors: Failure[] = []
      await pool(chunk, CONCURRENCY, async (entry) => { await runCase(entry, items, chunkErrors) })
      const health = await fz.healthy()
      // requests that found no server while it was down are the crash's, not failures of their own
      if (health.ok) for (const failure of chunkErrors) record(failure)
      if (!health.ok) {
        const isolating = Date.now()
        const culprit = await isolateCrash(fz, items)
        record({ key: culprit != null ? `node died after ${culprit.item.operation}: ${truncate(culprit.log ?? health.why ?? '', 140)}` : `node died (${health.why})`, item: culprit?.item ?? items[0], problem: `${health.why}; ${culprit == null ? `one of ${items.length} cases of this chunk, none alone reproduced it` : 'this case alone kills it'}`, log: culprit?.log })
        if (!(await fz.healthy()).ok) await fz.restart()
        isolationMs += Date.now() - isolating
      }
    }
    await slowLane
    const finalHealth = await fz.healthy()
    if (!finalHealth.ok) record({ key: `node down at the end (${finalHealth.why})`, item: queue.length > 0 ? buildCase(queue.at(-1)!.op, queue.at(-1)!.draft, credentials, fz.url()) : undefined as any, problem: finalHealth.why ?? '' })

    // one example per distinct failure, replayed alone so the node's log line belongs to it
    const distinct = new Map<string, Failure & { count: number, operations: Set<string> }>()
    for (const failure of failures) {
      const seen = distinct.get(failure.key)
      if (seen != null) {
        seen.count++
        seen.operations.add(failure.item.operation)
      } else {
        distinct.set(failure.key, { ...failure, count: 1, operations: new Set([failure.item.operation]) })
      }
    }
    // a failure that does not come back when its request is replayed alone (it met a node going down,
    // or depended on what ran beside it) is printed, but does not fail the run
    const flaky: Array<Failure & { count: number }> = []
    for (const failure of distinct.values()) {
      if (failure.log != null || failure.key.startsWith('node')) continue
      const at = Date.now()
      try {
        const again = await send(fz.url(), failure.item, 35_000)
        failure.problem += ` (replayed alone: ${again.status})`
        if (contractProblem(failure.item, again, documented5xx) == null) flaky.push(failure)
      } catch (err) {
        failure.problem += ` (replayed alone: ${(err as Error).message})`
      }
      await new Promise((resolve) => setTimeout(resolve, 150))
      failure.log = summariseLog(fz.logsSince(at))
      if (!(await fz.healthy()).ok) await fz.restart()
    }

    for (const failure of flaky) distinct.delete(failure.key)
    if (flaky.length > 0) process.stdout.write(`[fuzz http] did not reproduce alone (not counted):\n${flaky.map((f) => `  ${f.key}: ${f.problem}\n    ${describeCase(f.item).replace(/\n/g, '\n    ')}`).join('\n')}\n`)
    const seconds = ((Date.now() - started) / 1000).toFixed(1)
    const report = [...distinct.values()].map((failure, index) =>
      `#${index + 1} ${failure.key} (${failure.count}×${failure.operations.size > 1 ? ` on ${failure.operations.size} operations: ${[...failure.operations].join(', ')}` : ''})\n  problem: ${failure.problem}\n  ${describeCase(failure.item).replace(/\n/g, '\n  ')}${failure.log != null ? `\n  node log: ${failure.log}` : ''}`).join('\n\n')
    process.stdout.write(`[fuzz http] ${sent} cases in ${seconds} s (${(isolationMs / 1000).toFixed(1)} s of it isolating crashes), seed ${SEED}: ${distinct.size} distinct failures (${failures.length} failing cases)\n${report}\n`)
    const slowest = [...timings].sort((a, b) => b[1].total - a[1].total).slice(0, 6)
    process.stdout.write(`[fuzz http] slowest operations (total/max ms): ${slowest.map(([op, t]) => `${op} ${t.total}/${t.max}`).join(', ')}\n`)
    if (process.env.BKG_FUZZ_STATS != null) process.stdout.write([...statuses].sort().map(([key, count]) => `  ${key}: ${count}`).join('\n') + '\n')
    expect(distinct.size, `seed ${SEED}: ${distinct.size} distinct failures\n\n${report}`).toBe(0)
  }, 600_000)
})

/** Failures with one cause share a key: a 5xx by route and code, an error-shape problem by who produced it. */
function failureKey (item: HttpCase, problem: string, answer: HttpAnswer): string {
  if (problem.startsWith('S3 HEAD')) return problem.replace(/:.*/s, '')
  if (problem.startsWith('status')) return `${item.operation} → ${problem} ${errorCodeOf(answer)}`
  const fastify = /^(\d+) in Fastify's default error shape \(([^)]*)\)/.exec(problem)
  if (fastify != null) return `${fastify[1]} in Fastify's default error shape (${fastify[2].replace(/'.*/s, '')})${item.s3 === true ? ' on /s3' : ''}`
  return `${item.operation} → ${problem.replace(/:.*/s, '')}`
}

/** A request that met a reset connection is sent once more on a fresh one (keep-alive races). */
async function sendWithRetry (baseUrl: string, item: HttpCase): Promise<HttpAnswer> {
  try {
    return await send(baseUrl, item)
  } catch (err) {
    if (!/ECONNRESET|socket hang up|EPIPE/.test((err as Error).message)) throw err
    return await send(baseUrl, item, 30_000, true)
  }
}

/** Sends the cases of a chunk that killed the node one by one (restarting it) until one kills it alone. */
async function isolateCrash (fz: FuzzNode, items: HttpCase[]): Promise<{ item: HttpCase, log?: string } | undefined> {
  await fz.restart()
  // likely culprits first: deep or odd bodies
  const ordered = [...items].sort((a, b) => suspicion(b) - suspicion(a))
  const deadline = Date.now() + 30_000
  for (const item of ordered) {
    if (Date.now() > deadline) break
    const at = Date.now()
    await send(fz.url(), item, 10_000).catch(() => {})
    await new Promise((resolve) => setTimeout(resolve, 100))
    if (!(await fz.healthy()).ok) {
      const log = summariseLog(fz.logsSince(at))
      await fz.restart()
      return { item, log }
    }
  }
  return undefined
}

function suspicion (item: HttpCase): number {
  const note = item.bodyNote ?? ''
  return (/×/.test(note) ? 10 : 0) + (item.body != null ? 1 : 0) + (item.headers['last-event-id'] != null ? 2 : 0)
}
