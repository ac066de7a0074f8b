import { createHash, createHmac } from 'node:crypto'
import { SignatureV4 } from '@smithy/signature-v4'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { AKID, params, SECRET, sigv4Error } from './aws-examples.ts'
import {
  deriveSigningKey, EMPTY_SHA256, formatAmzDate, parseAuthorization, SigV4Error,
  STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER, uriEncode, verifyRequest, type RequestHeaders, type VerifiedRequest,
  type VerifyRequestInput
} from '../../node/api/s3/sigv4.ts'
import { presignQuery, signRequest } from '../helpers/sigv4-client.ts'

// The credentials and time of the S3 examples in the AWS documentation
// ("Signature Calculations for the Authorization Header" and "Authenticating Requests: Using Query Parameters").
const DOC_NOW = new Date('2013-05-24T00:00:00Z')
const DOC_DATE = '20130524T000000Z'
const CREDENTIAL = `Credential=${AKID}/20130524/us-east-1/s3/aws4_request`
const lookupSecret = (id: string): string | null => id === AKID ? SECRET : null

function authorization (signedHeaders: string, signature: string): string {
  return `AWS4-HMAC-SHA256 ${CREDENTIAL},SignedHeaders=${signedHeaders},Signature=${signature}`
}

/** The contract of the verifier: return or throw a SigV4Error, nothing else, ever. */
function returnsOrSigV4Error (fn: () => unknown): void {
  try {
    fn()
  } catch (err) {
    if (!(err instanceof SigV4Error)) {
      throw new Error(`threw ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)} instead of a SigV4Error`)
    }
    expect([400, 403]).toContain(err.status)
  }
}

const getObject = (): VerifyRequestInput => ({
  method: 'GET',
  path: '/test.txt',
  query: '',
  headers: {
    host: 'examplebucket.s3.amazonaws.com',
    range: 'bytes=0-9',
    'x-amz-content-sha256': EMPTY_SHA256,
    'x-amz-date': DOC_DATE,
    authorization: authorization('host;range;x-amz-content-sha256;x-amz-date', 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41')
  },
  lookupSecret,
  now: DOC_NOW
})

const PRESIGNED_QUERY = 'X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request' +
  '&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host' +
  '&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404'

const presignedGet = (): VerifyRequestInput => ({
  method: 'GET',
  path: '/test.txt',
  query: PRESIGNED_QUERY,
  headers: { host: 'examplebucket.s3.amazonaws.com' },
  lookupSecret,
  now: DOC_NOW
})

function withHeaders (input: VerifyRequestInput, headers: RequestHeaders): VerifyRequestInput {
  return { ...input, headers: { ...input.headers, ...headers } }
}

const NOW = new Date('2025-03-01T10:20:30Z')

/** A request signed by this module's client signer, path-style as the SDK sends it to a prefixed endpoint. */
function sign (headers: Record<string, string>, signedHeaders?: string[], path = '/s3/bucket/my%20key', query = 'x-id=PutObject'): VerifyRequestInput {
  const payloadHash = headers['x-amz-content-sha256'] ?? EMPTY_SHA256
  const value = signRequest({
    method: 'PUT', path, query, headers, payloadHash, signedHeaders, accessKeyId: AKID, secret: SECRET, region: 'garage', date: NOW
  })
  return { method: 'PUT', path, query, headers: { ...headers, authorization: value }, lookupSecret, now: NOW }
}

describe('AWS documentation vectors', () => {
  it('GET object with a Range header', () => {
    const verified = verifyRequest(getObject())
    expect(verified).toMatchObject({
      accessKeyId: AKID,
      region: 'us-east-1',
      payloadHash: EMPTY_SHA256,
      scope: '20130524/us-east-1/s3/aws4_request',
      amzDate: DOC_DATE,
      presigned: false
    })
    expect(verified.seedSignature).toBe('f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41')
  })

  it('PUT object with a Date header, a $ in the key and a body hash', () => {
    const body = createHash('sha256').update('Welcome to Amazon S3.').digest('hex')
    expect(body).toBe('44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072')
    const verified = verifyRequest({
      method: 'PUT',
      path: '/test%24file.text',
      query: '',
      headers: {
        date: 'Fri, 24 May 2013 00:00:00 GMT',
        host: 'examplebucket.s3.amazonaws.com',
        'x-amz-content-sha256': body,
        'x-amz-date': DOC_DATE,
        'x-amz-storage-class': 'REDUCED_REDUNDANCY',
        authorization: authorization('date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class', '98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd')
      },
      lookupSecret,
      now: DOC_NOW
    })
    expect(verified.payloadHash).toBe(body)
  })

  it('GET bucket lifecycle: a query parameter without a value', () => {
    verifyRequest({
      method: 'GET',
      path: '/',
      query: 'lifecycle',
      headers: {
        host: 'examplebucket.s3.amazonaws.com',
        'x-amz-content-sha256': EMPTY_SHA256,
        'x-amz-date': DOC_DATE,
        authorization: authorization('host;x-amz-content-sha256;x-amz-date', 'fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543')
      },
      lookupSecret,
      now: DOC_NOW
    })
  })

  it('GET bucket (list objects) with two query parameters', () => {
    verifyRequest({
      method: 'GET',
      path: '/',
      query: 'max-keys=2&prefix=J',
      headers: {
        host: 'examplebucket.s3.amazonaws.com',
        'x-amz-content-sha256': EMPTY_SHA256,
        'x-amz-date': DOC_DATE,
        authorization: authorization('host;x-amz-content-sha256;x-amz-date', '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7')
      },
      lookupSecret,
      now: DOC_NOW
    })
  })

  it('presigned GET object URL', () => {
    const verified = verifyRequest(presignedGet())
    expect(verified).toMatchObject({ presigned: true, payloadHash: 'UNSIGNED-PAYLOAD', amzDate: DOC_DATE })
  })

  it('chunked upload seed signature', () => {
    const verified = verifyRequest({
      method: 'PUT',
      path: '/examplebucket/chunkObject.txt',
      query: '',
      headers: {
        'content-encoding': 'aws-chunked',
        'content-length': '66824',
        host: 's3.amazonaws.com',
        'x-amz-content-sha256': STREAMING_SIGNED,
        'x-amz-date': DOC_DATE,
        'x-amz-decoded-content-length': '66560',
        'x-amz-storage-class': 'REDUCED_REDUNDANCY',
        authorization: authorization(
          'content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class',
          '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9')
      },
      lookupSecret,
      now: DOC_NOW
    })
    expect(verified.payloadHash).toBe(STREAMING_SIGNED)
    expect(verified.signingKey).toEqual(deriveSigningKey(SECRET, '20130524', 'us-east-1', 's3'))
  })

  it('signing key derivation (the IAM example of the SigV4 docs)', () => {
    const key = deriveSigningKey('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', '20120215', 'us-east-1', 'iam')
    expect(key.toString('hex')).toBe('f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d')
  })

  it('the client signer reproduces the documented Authorization headers and presigned URL', () => {
    const input = getObject()
    const { authorization: expected, ...headers } = input.headers
    const signed = signRequest({
      method: 'GET',
      path: '/test.txt',
      query: '',
      headers: headers as Record<string, string>,
      payloadHash: EMPTY_SHA256,
      accessKeyId: AKID,
      secret: SECRET,
      region: 'us-east-1',
      date: DOC_NOW
    })
    expect(signed.replaceAll(', ', ',')).toBe(expected)
    expect(presignQuery({
      method: 'GET',
      path: '/test.txt',
      query: '',
      headers: { host: 'examplebucket.s3.amazonaws.com' },
      accessKeyId: AKID,
      secret: SECRET,
      region: 'us-east-1',
      date: DOC_NOW,
      expiresSeconds: 86400
    })).toBe(PRESIGNED_QUERY)
  })

  it('generic SigV4 suite: get-vanilla and get-vanilla-query-order-key-case', () => {
    const base = {
      method: 'GET',
      path: '/',
      headers: { host: 'example.amazonaws.com', 'x-amz-date': '20150830T123600Z' },
      payloadHash: EMPTY_SHA256,
      accessKeyId: 'AKIDEXAMPLE',
      secret: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
      region: 'us-east-1',
      date: new Date('2015-08-30T12:36:00Z'),
      service: 'service'
    }
    expect(signRequest({ ...base, query: '' })).toMatch(/Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31$/)
    expect(signRequest({ ...base, query: 'Param2=value2&Param1=value1' })).toMatch(/Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500$/)
  })
})

describe('refusals', () => {
  const tampered: Array<[string, (input: VerifyRequestInput) => VerifyRequestInput]> = [
    ['method', (input) => ({ ...input, method: 'HEAD' })],
    ['path', (input) => ({ ...input, path: '/test.txT' })],
    ['path encoding', (input) => ({ ...input, path: '/test%2Etxt' })],
    ['query', (input) => ({ ...input, query: 'versionId=1' })],
    ['signed header', (input) => withHeaders(input, { range: 'bytes=0-10' })],
    ['payload hash', (input) => withHeaders(input, { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' })],
    ['signature', (input) => withHeaders(input, { authorization: (input.headers.authorization as string).replace(/1$/, '2') })]
  ]
  for (const [what, tamper] of tampered) {
    it(`a tampered ${what} → SignatureDoesNotMatch`, () => {
      const err = sigv4Error(() => verifyRequest(tamper(getObject())))
      expect(err.code).toBe('SignatureDoesNotMatch')
      expect(err.status).toBe(403)
    })
  }

  it('an unsigned header may change; signed ones are trimmed and their inner spaces collapsed', () => {
    verifyRequest(withHeaders(getObject(), { 'user-agent': 'anything', range: '  bytes=0-9 ' }))
    const spaced = sign({ host: 'h', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': formatAmzDate(NOW), 'x-amz-meta-m': 'a b c' })
    verifyRequest(withHeaders(spaced, { 'x-amz-meta-m': ' a   b \t c\t' }))
    expect(sigv4Error(() => verifyRequest(withHeaders(spaced, { 'x-amz-meta-m': 'a bc' }))).code).toBe('SignatureDoesNotMatch')
  })

  it('a tampered presigned URL → SignatureDoesNotMatch', () => {
    for (const query of [PRESIGNED_QUERY.replace('86400', '86399'), `${PRESIGNED_QUERY}&x-id=GetObject`, PRESIGNED_QUERY.replace('d404', 'd405')]) {
      expect(sigv4Error(() => verifyRequest({ ...presignedGet(), query })).code).toBe('SignatureDoesNotMatch')
    }
    expect(sigv4Error(() => verifyRequest({ ...presignedGet(), method: 'PUT' })).code).toBe('SignatureDoesNotMatch')
  })

  it('an unknown access key → InvalidAccessKeyId', () => {
    const err = sigv4Error(() => verifyRequest({ ...getObject(), lookupSecret: () => null }))
    expect([err.code, err.status]).toEqual(['InvalidAccessKeyId', 403])
    expect(sigv4Error(() => verifyRequest({ ...presignedGet(), lookupSecret: () => null })).code).toBe('InvalidAccessKeyId')
  })

  it('a wrong secret → SignatureDoesNotMatch', () => {
    expect(sigv4Error(() => verifyRequest({ ...getObject(), lookupSecret: () => 'other' })).code).toBe('SignatureDoesNotMatch')
  })

  it('a request time more than 15 minutes off → RequestTimeTooSkewed', () => {
    const minutes = (n: number): Date => new Date(DOC_NOW.getTime() + n * 60_000)
    verifyRequest({ ...getObject(), now: minutes(15) })
    verifyRequest({ ...getObject(), now: minutes(-15) })
    for (const now of [minutes(15.02), minutes(-15.02), minutes(600)]) {
      const err = sigv4Error(() => verifyRequest({ ...getObject(), now }))
      expect([err.code, err.status]).toEqual(['RequestTimeTooSkewed', 403])
    }
  })

  it('an expired presigned URL → AccessDenied "Request has expired"', () => {
    verifyRequest({ ...presignedGet(), now: new Date(DOC_NOW.getTime() + 86_400_000) })
    const err = sigv4Error(() => verifyRequest({ ...presignedGet(), now: new Date(DOC_NOW.getTime() + 86_401_000) }))
    expect([err.code, err.status, err.message]).toEqual(['AccessDenied', 403, 'Request has expired'])
    const early = sigv4Error(() => verifyRequest({ ...presignedGet(), now: new Date(DOC_NOW.getTime() - 3_600_000) }))
    expect([early.code, early.status]).toEqual(['AccessDenied', 403])
  })

  it('presigned URLs valid for more than a week, or missing a parameter → AuthorizationQueryParametersError', () => {
    const week = presignQuery({
      method: 'GET',
      path: '/test.txt',
      query: '',
      headers: { host: 'h' },
      accessKeyId: AKID,
      secret: SECRET,
      region: 'us-east-1',
      date: DOC_NOW,
      expiresSeconds: 604_801
    })
    const bad = [week, PRESIGNED_QUERY.replace(/&X-Amz-Expires=\d+/, ''), PRESIGNED_QUERY.replace('AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA1'),
      PRESIGNED_QUERY.replace('host', 'range'), PRESIGNED_QUERY.replace('X-Amz-Date=20130524', 'X-Amz-Date=20130525'),
      PRESIGNED_QUERY.replace('%2Fs3%2F', '%2Fec2%2F'), `${PRESIGNED_QUERY}&X-Amz-Date=20130524T000000Z`]
    for (const query of bad) {
      const err = sigv4Error(() => verifyRequest({ ...presignedGet(), query }))
      expect([err.code, err.status]).toEqual(['AuthorizationQueryParametersError', 400])
    }
  })

  it('malformed Authorization headers → AuthorizationHeaderMalformed (400)', () => {
    const good = getObject().headers.authorization as string
    const malformed = [
      'Bearer abc',
      'AWS4-HMAC-SHA256',
      good.replace('Credential=', 'Credentials='),
      good.replace(',Signature=', ',Signature=XYZ'),
      good.replace(/,Signature=[0-9a-f]+/, ''),
      good.replace('/aws4_request', '/aws4_request/x'),
      good.replace('/s3/', '/ec2/'),
      good.replace('/aws4_request', '/aws5_request'),
      good.replace('/20130524/', '/2013052/'),
      good.replace('/20130524/', '/20130525/'),
      good.replace('SignedHeaders=host', 'SignedHeaders=Host'),
      good.replace('SignedHeaders=host;', 'SignedHeaders='),
      `${good},Signature=${'0'.repeat(64)}`
    ]
    for (const value of malformed) {
      const err = sigv4Error(() => verifyRequest(withHeaders(getObject(), { authorization: value })))
      expect([err.code, err.status], value).toEqual(['AuthorizationHeaderMalformed', 400])
    }
    expect(sigv4Error(() => verifyRequest(withHeaders(getObject(), { authorization: [good, good] }))).code).toBe('AuthorizationHeaderMalformed')
  })

  it('the x-amz-content-sha256 header must be present, valid and signed', () => {
    const { 'x-amz-content-sha256': _, ...rest } = getObject().headers
    expect(sigv4Error(() => verifyRequest({ ...getObject(), headers: rest })).code).toBe('InvalidRequest')
    expect(sigv4Error(() => verifyRequest(withHeaders(getObject(), { 'x-amz-content-sha256': 'abc' }))).code).toBe('InvalidArgument')
    const signed = sign({ host: 'h', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': formatAmzDate(NOW) }, ['host', 'x-amz-date'])
    expect(sigv4Error(() => verifyRequest(signed)).message).toMatch(/x-amz-content-sha256 header must be signed/)
  })

  it('a missing or invalid request date → AccessDenied', () => {
    for (const date of [undefined, '20130524T000000', '20131324T000000Z']) {
      const err = sigv4Error(() => verifyRequest(withHeaders(getObject(), { 'x-amz-date': date })))
      expect([err.code, err.status]).toEqual(['AccessDenied', 403])
    }
  })

  it('no credentials at all → AccessDenied; both mechanisms at once → InvalidArgument', () => {
    expect(sigv4Error(() => verifyRequest(withHeaders(getObject(), { authorization: undefined }))).code).toBe('AccessDenied')
    expect(sigv4Error(() => verifyRequest(withHeaders(presignedGet(), { authorization: 'x' }))).code).toBe('InvalidArgument')
  })

  it('a configured region refuses credentials scoped to another', () => {
    verifyRequest({ ...getObject(), region: 'us-east-1' })
    expect(sigv4Error(() => verifyRequest({ ...getObject(), region: 'eu-west-1' })).code).toBe('AuthorizationHeaderMalformed')
    expect(sigv4Error(() => verifyRequest({ ...presignedGet(), region: 'eu-west-1' })).code).toBe('AuthorizationQueryParametersError')
  })

  it('the host header must be signed', () => {
    const signed = sign({ 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': formatAmzDate(NOW) })
    const err = sigv4Error(() => verifyRequest(signed))
    expect([err.code, err.message]).toEqual(['AuthorizationHeaderMalformed', expect.stringMatching(/host header must be signed/)])
  })
})

describe('round trips through the client signer', () => {
  it('the streaming payload modes and a repeated header', () => {
    for (const mode of [STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER, 'UNSIGNED-PAYLOAD']) {
      const verified = verifyRequest(sign({ host: '127.0.0.1:9000', 'x-amz-content-sha256': mode, 'x-amz-date': formatAmzDate(NOW) }))
      expect(verified.payloadHash).toBe(mode)
      expect(verified.region).toBe('garage')
    }
    const repeated = sign({ host: 'h', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': formatAmzDate(NOW), 'x-amz-meta-a': 'one,two' })
    verifyRequest(withHeaders(repeated, { 'x-amz-meta-a': ['one', ' two'] }))
  })

  it('a Date header stands in for x-amz-date', () => {
    const signed = sign({ host: 'h', 'x-amz-content-sha256': EMPTY_SHA256, date: NOW.toUTCString() })
    expect(verifyRequest(signed).amzDate).toBe('20250301T102030Z')
  })

  it('random keys, query parameters and header values verify, and changing any of them does not', () => {
    const segment = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 })
    const headerValue = fc.string({ unit: fc.constantFrom('a', 'B', ' ', '=', ',', ';', '~', '\t', '"'), maxLength: 20 })
    fc.assert(fc.property(
      fc.array(segment, { minLength: 1, maxLength: 4 }),
      fc.array(fc.tuple(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 })), { maxLength: 5 }),
      headerValue,
      (segments, query, meta) => {
        const path = `/s3/bucket/${segments.map(uriEncode).join('/')}`
        const rawQuery = query.map(([k, v]) => `${uriEncode(k)}=${uriEncode(v)}`).join('&')
        const headers = { host: 'localhost:9000', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': formatAmzDate(NOW), 'x-amz-meta-m': meta }
        const input = sign(headers, undefined, path, rawQuery)
        const verified: VerifiedRequest = verifyRequest(input)
        expect(verified.accessKeyId).toBe(AKID)
        expect(sigv4Error(() => verifyRequest({ ...input, path: `${path}x` })).code).toBe('SignatureDoesNotMatch')
        expect(sigv4Error(() => verifyRequest({ ...input, query: `${rawQuery}&z=1` })).code).toBe('SignatureDoesNotMatch')
        expect(sigv4Error(() => verifyRequest(withHeaders(input, { 'x-amz-meta-m': `${meta}x` }))).code).toBe('SignatureDoesNotMatch')
        const presigned = presignQuery({
          method: 'GET',
          path,
          query: rawQuery,
          headers: { host: 'localhost:9000' },
          accessKeyId: AKID,
          secret: SECRET,
          region: 'garage',
          date: NOW,
          expiresSeconds: 60
        })
        verifyRequest({ method: 'GET', path, query: presigned, headers: { host: 'localhost:9000' }, lookupSecret, now: NOW })
      }
    ), params(300))
  })
})

describe('fuzzing', () => {
  const authChars = fc.constantFrom(...'AWS4-HMAC-SHA256 Credential=/aws4_request s3 SignedHeaders=host;x Signature=0af, '.split(''))

  it('parseAuthorization and verifyRequest only ever throw SigV4Error', () => {
    const good = getObject().headers.authorization as string
    const value = fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary' }),
      fc.string({ unit: authChars, maxLength: 120 }),
      fc.tuple(fc.nat({ max: good.length }), fc.nat({ max: good.length }), fc.string({ maxLength: 6 }))
        .map(([a, b, s]) => good.slice(0, Math.min(a, b)) + s + good.slice(Math.max(a, b)))
    )
    fc.assert(fc.property(value, (v) => {
      returnsOrSigV4Error(() => parseAuthorization(v))
      returnsOrSigV4Error(() => verifyRequest(withHeaders(getObject(), { authorization: v })))
    }), params())
  })

  it('presigned query strings and odd headers only ever throw SigV4Error', () => {
    const query = fc.oneof(
      fc.string({ unit: 'binary' }),
      fc.tuple(fc.nat({ max: PRESIGNED_QUERY.length }), fc.nat({ max: PRESIGNED_QUERY.length }), fc.string({ maxLength: 6 }))
        .map(([a, b, s]) => PRESIGNED_QUERY.slice(0, Math.min(a, b)) + s + PRESIGNED_QUERY.slice(Math.max(a, b)))
    )
    const headerName = fc.constantFrom('constructor', '__proto__', 'toString', 'host', 'x-amz-date', 'x-amz-content-sha256', 'date')
    fc.assert(fc.property(query, headerName, fc.oneof(fc.string(), fc.array(fc.string())), (q, name, value) => {
      returnsOrSigV4Error(() => verifyRequest({ ...presignedGet(), query: q }))
      returnsOrSigV4Error(() => verifyRequest({ ...presignedGet(), query: q.replace('SignedHeaders=host', `SignedHeaders=host;${name}`) }))
      returnsOrSigV4Error(() => verifyRequest(withHeaders(getObject(), { [name]: value })))
    }), params())
  })
})

// The AWS SDK v3's own signer (@smithy/signature-v4), with node:crypto as its hash.
class NodeSha256 {
  private readonly hash: ReturnType<typeof createHash> | ReturnType<typeof createHmac>
  constructor (secret?: string | ArrayBuffer | ArrayBufferView) {
    this.hash = secret == null ? createHash('sha256') : createHmac('sha256', bytes(secret))
  }

  update (data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(bytes(data))
  }

  async digest (): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest())
  }
}

function bytes (data: string | ArrayBuffer | ArrayBufferView): string | Uint8Array {
  if (typeof data === 'string') return data
  return ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data)
}

type SdkRequest = Parameters<SignatureV4['sign']>[0] & { query: Record<string, string | string[]> }

describe('against @smithy/signature-v4 (the AWS SDK v3 signer)', () => {
  function smithySigner (): SignatureV4 {
    return new SignatureV4({
      service: 's3',
      region: 'eu-central-1',
      credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
      sha256: NodeSha256,
      uriEscapePath: false,
      applyChecksum: true
    })
  }
  const serialise = (query: Record<string, string | string[]>): string => Object.entries(query)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((item) => `${uriEncode(k)}=${uriEncode(item)}`)).join('&')
  const lower = (headers: Record<string, string>): RequestHeaders =>
    Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]))
  const request = (headers: Record<string, string>): SdkRequest => ({
    method: 'PUT',
    protocol: 'http:',
    hostname: '127.0.0.1',
    port: 9000,
    path: '/s3/bucket/my%20key%2B%28v2%29',
    query: { 'x-id': 'PutObject', tagging: 'a b&c=d', empty: '' },
    headers: { host: '127.0.0.1:9000', 'content-type': 'text/plain', 'x-amz-meta-note': '  two  spaces ', ...headers }
  })

  it('verifies SDK-signed requests for every payload mode', async () => {
    const signer = smithySigner()
    for (const mode of [EMPTY_SHA256, 'UNSIGNED-PAYLOAD', STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER]) {
      const signed = await signer.sign(request({ 'x-amz-content-sha256': mode }), { signingDate: NOW })
      const verified = verifyRequest({
        method: signed.method, path: signed.path, query: serialise((signed as SdkRequest).query), headers: lower(signed.headers), lookupSecret, now: NOW
      })
      expect(verified).toMatchObject({ payloadHash: mode, region: 'eu-central-1' })
    }
  })

  it('verifies SDK-presigned URLs', async () => {
    const signer = smithySigner()
    const presigned = await signer.presign(request({ 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }), { signingDate: NOW, expiresIn: 900 })
    const verified = verifyRequest({
      method: 'PUT', path: presigned.path, query: serialise((presigned as SdkRequest).query), headers: lower(presigned.headers), lookupSecret, now: NOW
    })
    expect(verified.presigned).toBe(true)
  })
})
