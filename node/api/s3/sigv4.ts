import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { BkgError } from '../../../lib/bkg-error.ts'

/**
 * AWS Signature Version 4 as an S3-compatible endpoint checks it, so an unmodified S3 client
 * (path-style addressing, any region) can authenticate with an access key and secret.
 * Both forms are handled: the `Authorization` header and presigned URLs (`X-Amz-*` query).
 * S3 flavour matters: the path is signed exactly as sent (no double encoding, no normalisation)
 * and the payload hash comes from `x-amz-content-sha256`, which may name a streaming mode.
 */

export const ALGORITHM = 'AWS4-HMAC-SHA256'
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD'
export const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD'
export const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER'
export const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER'
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
/** S3 refuses presigned URLs valid for longer than seven days */
export const MAX_PRESIGNED_EXPIRES = 604_800
/** S3's tolerance between the signed request time and its own clock */
export const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000

/** the service and terminator of an S3 credential scope (`<date>/<region>/s3/aws4_request`) */
export const SERVICE = 's3'
export const TERMINATOR = 'aws4_request'
const PAYLOAD_MODES = new Set([UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER])
const HEX_SHA256 = /^[0-9a-fA-F]{64}$/
const SIGNATURE = /^[0-9a-f]{64}$/
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/
const HTTP_DATE = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/

/** A refusal carrying the error code and HTTP status S3 itself would answer with. */
export class SigV4Error extends BkgError {
  constructor (code: string, status: number, message: string) {
    super(code, status, message)
    this.name = 'SigV4Error'
  }
}

/** Header names lowercased, as `IncomingMessage.headers` (or `headersDistinct`) gives them. */
export type RequestHeaders = Record<string, string | string[] | undefined>

export interface VerifyRequestInput {
  method: string
  /** the path as received, still percent-encoded, without the query */
  path: string
  /** the query string as received, without `?` */
  query: string
  headers: RequestHeaders
  lookupSecret: (accessKeyId: string) => string | null
  now: Date
  /** when set, credentials scoped to any other region are refused, as S3 does */
  region?: string
}

export interface VerifiedRequest {
  accessKeyId: string
  region: string
  /** the value the signature covers: a hex SHA-256 the body must match, or a mode such as `UNSIGNED-PAYLOAD` */
  payloadHash: string
  signingKey: Buffer
  /** the request signature, which chains into the first aws-chunked chunk signature */
  seedSignature: string
  /** `yyyymmdd/region/s3/aws4_request` */
  scope: string
  amzDate: string
  signedHeaders: string[]
  presigned: boolean
}

export interface Credential {
  accessKeyId: string
  date: string
  region: string
}

export interface AuthorizationHeader {
  credential: Credential
  signedHeaders: string[]
  signature: string
}

export function deriveSigningKey (secret: string, date: string, region: string, service: string): Buffer {
  const dateKey = hmac(`AWS4${secret}`, date)
  const regionKey = hmac(dateKey, region)
  const serviceKey = hmac(regionKey, service)
  return hmac(serviceKey, TERMINATOR)
}

/** Verifies a header-signed or presigned request; throws a SigV4Error saying why when it is not authentic. */
export function verifyRequest (input: VerifyRequestInput): VerifiedRequest {
  const authorization = input.headers.authorization
  const presigned = hasQueryParam(input.query, 'X-Amz-Algorithm')
  if (authorization !== undefined && presigned) {
    throw new SigV4Error('InvalidArgument', 400, 'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified')
  }
  if (presigned) return verifyPresigned(input)
  if (authorization === undefined) throw new SigV4Error('AccessDenied', 403, 'Access Denied')
  if (typeof authorization !== 'string') throw malformedHeader('more than one Authorization header')
  return verifyHeaderSigned(input, authorization)
}

/** Parses `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`; throws AuthorizationHeaderMalformed. */
export function parseAuthorization (value: string): AuthorizationHeader {
  const prefix = `${ALGORITHM} `
  if (!value.startsWith(prefix)) throw malformedHeader(`the algorithm must be ${ALGORITHM}`)
  const fields = new Map<string, string>()
  for (const part of value.slice(prefix.length).split(',')) {
    const field = part.trim()
    const eq = field.indexOf('=')
    const name = eq === -1 ? field : field.slice(0, eq)
    if (eq === -1 || !['Credential', 'SignedHeaders', 'Signature'].includes(name) || fields.has(name)) {
      throw malformedHeader(`unexpected component '${field.slice(0, 64)}'`)
    }
    fields.set(name, field.slice(eq + 1))
  }
  const credential = fields.get('Credential')
  const signedHeaders = fields.get('SignedHeaders')
  const signature = fields.get('Signature')
  if (credential === undefined || signedHeaders === undefined || signature === undefined) {
    throw malformedHeader('Credential, SignedHeaders and Signature are all required')
  }
  if (!SIGNATURE.test(signature)) throw malformedHeader('the signature must be 64 lowercase hex digits')
  return {
    credential: parseCredential(credential, malformedHeader),
    signedHeaders: parseSignedHeaders(signedHeaders, malformedHeader),
    signature
  }
}

function verifyHeaderSigned (input: VerifyRequestInput, authorization: string): VerifiedRequest {
  const { credential, signedHeaders, signature } = parseAuthorization(authorization)
  const amzDate = requestDate(input.headers)
  if (credential.date !== amzDate.slice(0, 8)) throw malformedHeader('Invalid credential date. Date is not the same as X-Amz-Date.')
  checkRegion(credential, input.region, malformedHeader)
  if (!signedHeaders.includes('host')) throw malformedHeader('the host header must be signed')
  const payloadHash = contentSha256(input.headers)
  if (!signedHeaders.includes('x-amz-content-sha256')) throw malformedHeader('the x-amz-content-sha256 header must be signed')
  const secret = secretFor(input, credential.accessKeyId)
  if (Math.abs(parseAmzDate(amzDate) - input.now.getTime()) > MAX_CLOCK_SKEW_MS) {
    throw new SigV4Error('RequestTimeTooSkewed', 403, 'The difference between the request time and the current time is too large.')
  }
  const canonical = canonicalRequest(input.method, input.path, canonicalQuery(input.query), input.headers, signedHeaders, payloadHash)
  return checkSignature(canonical, secret, credential, amzDate, signedHeaders, signature, payloadHash, false)
}

function verifyPresigned (input: VerifyRequestInput): VerifiedRequest {
  const params = queryParams(input.query)
  const single = (name: string): string => {
    const values = params.filter(([key]) => key === name)
    if (values.length !== 1) {
      throw malformedQuery('Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.')
    }
    return values[0][1]
  }
  const algorithm = single('X-Amz-Algorithm')
  const credentialParam = single('X-Amz-Credential')
  const amzDate = single('X-Amz-Date')
  const expiresParam = single('X-Amz-Expires')
  const signedHeadersParam = single('X-Amz-SignedHeaders')
  const signature = single('X-Amz-Signature')
  if (algorithm !== ALGORITHM) throw malformedQuery(`X-Amz-Algorithm only supports "${ALGORITHM}"`)
  const credential = parseCredential(credentialParam, malformedQuery)
  if (!AMZ_DATE.test(amzDate) || Number.isNaN(parseAmzDate(amzDate))) {
    throw malformedQuery('X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd\'T\'HHmmss\'Z\'"')
  }
  if (!/^\d{1,7}$/.test(expiresParam)) throw malformedQuery('X-Amz-Expires should be a number')
  const expires = Number(expiresParam)
  if (expires > MAX_PRESIGNED_EXPIRES) throw malformedQuery(`X-Amz-Expires must be less than a week (in seconds) that is ${MAX_PRESIGNED_EXPIRES}`)
  if (credential.date !== amzDate.slice(0, 8)) throw malformedQuery('Invalid credential date. Date is not the same as X-Amz-Date.')
  checkRegion(credential, input.region, malformedQuery)
  const signedHeaders = parseSignedHeaders(signedHeadersParam, malformedQuery)
  if (!signedHeaders.includes('host')) throw malformedQuery('the host header must be signed')
  if (!SIGNATURE.test(signature)) throw malformedQuery('X-Amz-Signature must be 64 lowercase hex digits')
  const secret = secretFor(input, credential.accessKeyId)
  const signedAt = parseAmzDate(amzDate)
  const now = input.now.getTime()
  if (signedAt - now > MAX_CLOCK_SKEW_MS) throw new SigV4Error('AccessDenied', 403, 'Request is not valid yet')
  if (now > signedAt + expires * 1000) throw new SigV4Error('AccessDenied', 403, 'Request has expired')
  const payloadHash = presignedPayloadHash(params)
  const canonical = canonicalRequest(input.method, input.path, canonicalQuery(input.query, 'X-Amz-Signature'), input.headers, signedHeaders, payloadHash)
  return checkSignature(canonical, secret, credential, amzDate, signedHeaders, signature, payloadHash, true)
}

/**
 * Presigned URLs sign `UNSIGNED-PAYLOAD`, but a client may hoist its `x-amz-content-sha256` into the
 * query (the JS SDK v3 presigner does, with UNSIGNED-PAYLOAD); a hash given there is what it signed.
 */
function presignedPayloadHash (params: Array<[string, string]>): string {
  const values = params.filter(([name]) => name.toLowerCase() === 'x-amz-content-sha256')
  if (values.length === 0) return UNSIGNED_PAYLOAD
  const value = values[0][1]
  if (values.length > 1 || !(value === UNSIGNED_PAYLOAD || HEX_SHA256.test(value))) {
    throw malformedQuery('X-Amz-Content-Sha256 must be UNSIGNED-PAYLOAD or a valid sha256 value')
  }
  return value
}

function checkSignature (
  canonical: string, secret: string, credential: Credential, amzDate: string, signedHeaders: string[],
  signature: string, payloadHash: string, presigned: boolean
): VerifiedRequest {
  const scope = `${credential.date}/${credential.region}/${SERVICE}/${TERMINATOR}`
  const signingKey = deriveSigningKey(secret, credential.date, credential.region, SERVICE)
  const expected = hmac(signingKey, stringToSign(amzDate, scope, canonical))
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
    throw new SigV4Error('SignatureDoesNotMatch', 403, 'The request signature we calculated does not match the signature you provided. Check your key and signing method.')
  }
  return {
    accessKeyId: credential.accessKeyId,
    region: credential.region,
    payloadHash: HEX_SHA256.test(payloadHash) ? payloadHash.toLowerCase() : payloadHash,
    signingKey,
    seedSignature: signature,
    scope,
    amzDate,
    signedHeaders,
    presigned
  }
}

function secretFor (input: VerifyRequestInput, accessKeyId: string): string {
  const secret = input.lookupSecret(accessKeyId)
  if (secret === null) {
    throw new SigV4Error('InvalidAccessKeyId', 403, 'The AWS Access Key Id you provided does not exist in our records.')
  }
  return secret
}

function checkRegion (credential: Credential, expected: string | undefined, fail: (message: string) => SigV4Error): void {
  if (expected !== undefined && credential.region !== expected) {
    throw fail(`the region '${credential.region}' is wrong; expecting '${expected}'`)
  }
}

function parseCredential (value: string, fail: (message: string) => SigV4Error): Credential {
  const parts = value.split('/')
  if (parts.length !== 5) throw fail('the Credential must be <access key id>/<date>/<region>/s3/aws4_request')
  const [accessKeyId, date, region, service, terminator] = parts
  if (accessKeyId === '' || /\s/.test(accessKeyId)) throw fail('the Credential has no access key id')
  if (!/^\d{8}$/.test(date)) throw fail(`invalid date '${date.slice(0, 16)}' in the Credential`)
  if (region === '' || /\s/.test(region)) throw fail('the Credential has no region')
  if (service !== SERVICE) throw fail(`incorrect service '${service.slice(0, 32)}'. This endpoint belongs to '${SERVICE}'.`)
  if (terminator !== TERMINATOR) throw fail(`incorrect terminal '${terminator.slice(0, 32)}'. This endpoint uses '${TERMINATOR}'.`)
  return { accessKeyId, date, region }
}

function parseSignedHeaders (value: string, fail: (message: string) => SigV4Error): string[] {
  const names = value.split(';')
  if (!names.every((name) => HEADER_NAME.test(name))) throw fail('SignedHeaders must be lowercase header names separated by ;')
  return names
}

/** The signed time: `x-amz-date`, or an RFC 7231 `Date` header when that is absent, as `yyyymmddThhmmssZ`. */
function requestDate (headers: RequestHeaders): string {
  const amz = headers['x-amz-date']
  const date = headers.date
  let value: string | undefined
  if (typeof amz === 'string') {
    value = amz.trim()
  } else if (amz === undefined && typeof date === 'string' && HTTP_DATE.test(date.trim())) {
    const ms = Date.parse(date)
    if (!Number.isNaN(ms)) value = formatAmzDate(new Date(ms))
  }
  if (value === undefined || !AMZ_DATE.test(value) || Number.isNaN(parseAmzDate(value))) {
    throw new SigV4Error('AccessDenied', 403, 'AWS authentication requires a valid Date or x-amz-date header')
  }
  return value
}

function contentSha256 (headers: RequestHeaders): string {
  const value = headers['x-amz-content-sha256']
  if (value === undefined) throw new SigV4Error('InvalidRequest', 400, 'Missing required header for this request: x-amz-content-sha256')
  if (typeof value !== 'string' || !(PAYLOAD_MODES.has(value) || HEX_SHA256.test(value))) {
    throw new SigV4Error('InvalidArgument', 400, 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* payload mode, or a valid sha256 value.')
  }
  return value
}

function malformedHeader (message: string): SigV4Error {
  return new SigV4Error('AuthorizationHeaderMalformed', 400, `The authorization header is malformed; ${message}`)
}

function malformedQuery (message: string): SigV4Error {
  return new SigV4Error('AuthorizationQueryParametersError', 400, message)
}

// ------------------------------------------------------------------ canonical request

export function canonicalRequest (
  method: string, path: string, query: string, headers: RequestHeaders, signedHeaders: string[], payloadHash: string
): string {
  // own properties only: a signed header named `constructor` must not reach Object.prototype
  const lines = signedHeaders.map((name) => `${name}:${canonicalHeaderValue(Object.hasOwn(headers, name) ? headers[name] : undefined)}\n`)
  return [method, path === '' ? '/' : path, query, lines.join(''), signedHeaders.join(';'), payloadHash].join('\n')
}

/** Repeated headers are comma-joined; pass `headersDistinct` to keep them apart, since Node joins them with ', '. */
function canonicalHeaderValue (value: string | string[] | undefined): string {
  if (value === undefined) return ''
  const values = typeof value === 'string' ? [value] : value
  return values.map((v) => v.trim().replace(/\s+/g, ' ')).join(',')
}

export function stringToSign (amzDate: string, scope: string, canonical: string): string {
  return [ALGORITHM, amzDate, scope, sha256Hex(canonical)].join('\n')
}

/** The query's parameters, each name and value decoded; a malformed escape is kept as written. */
function queryParams (query: string): Array<[string, string]> {
  const params: Array<[string, string]> = []
  for (const pair of query.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const name = eq === -1 ? pair : pair.slice(0, eq)
    const value = eq === -1 ? '' : pair.slice(eq + 1)
    params.push([decode(name), decode(value)])
  }
  return params
}

function hasQueryParam (query: string, name: string): boolean {
  return queryParams(query).some(([key]) => key === name)
}

export function canonicalQuery (query: string, exclude?: string): string {
  const encoded = queryParams(query)
    .filter(([name]) => name !== exclude)
    .map(([name, value]): [string, string] => [uriEncode(name), uriEncode(value)])
  encoded.sort(([a, x], [b, y]) => a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0)
  return encoded.map(([name, value]) => `${name}=${value}`).join('&')
}

function decode (value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    // not an error of its own: the signature, computed over the value as written, accepts or refuses it
    return value
  }
}

/** RFC 3986 encoding: everything but `A-Za-z0-9-._~` is percent-encoded. */
export function uriEncode (value: string): string {
  return encodeURIComponent(value.toWellFormed()).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

export function formatAmzDate (date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')
}

/** Milliseconds since the epoch, or NaN for a well-formed but impossible time such as month 13. */
function parseAmzDate (value: string): number {
  const m = AMZ_DATE.exec(value)
  if (m === null) return Number.NaN
  const ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6])
  return formatAmzDate(new Date(ms)) === value ? ms : Number.NaN
}

function hmac (key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest()
}

function sha256Hex (data: string): string {
  return createHash('sha256').update(data, 'utf8').digest('hex')
}
