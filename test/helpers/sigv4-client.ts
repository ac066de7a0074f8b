import { createHmac } from 'node:crypto'
import {
  ALGORITHM, canonicalQuery, canonicalRequest, deriveSigningKey, formatAmzDate, SERVICE, stringToSign, TERMINATOR,
  UNSIGNED_PAYLOAD, uriEncode, type RequestHeaders
} from '../../node/api/s3/sigv4.ts'

/**
 * SigV4 as an S3 client signs, for tests and tools: the node only verifies (node/api/s3/sigv4.ts),
 * and this side is built from the same canonical request, so tests that check it against AWS's
 * own signer (@smithy/signature-v4) and the AWS documentation's examples check both.
 */

export interface SignRequestInput {
  method: string
  /** the path exactly as it will be sent, already percent-encoded */
  path: string
  /** the query string as it will be sent, without `?` */
  query: string
  /** must include `host`; header auth also needs `x-amz-date` (formatAmzDate(date)) and `x-amz-content-sha256` */
  headers: Record<string, string | string[]>
  payloadHash: string
  accessKeyId: string
  secret: string
  region: string
  date: Date
  /** defaults to every header given */
  signedHeaders?: string[]
  /** defaults to `s3`; other services only for checking against generic SigV4 vectors */
  service?: string
}

/** Signs as a client would and returns the `Authorization` header value. */
export function signRequest (input: SignRequestInput): string {
  const { scope, signedHeaders, signature } = clientSignature(input, input.query, input.payloadHash)
  return `${ALGORITHM} Credential=${input.accessKeyId}/${scope}, SignedHeaders=${signedHeaders.join(';')}, Signature=${signature}`
}

export interface PresignInput extends Omit<SignRequestInput, 'payloadHash'> {
  expiresSeconds: number
}

/** Returns the full query string of a presigned URL: the given query plus the `X-Amz-*` parameters. */
export function presignQuery (input: PresignInput): string {
  const service = input.service ?? SERVICE
  const signedHeaders = clientSignedHeaders(input)
  const auth = [
    ['X-Amz-Algorithm', ALGORITHM],
    ['X-Amz-Credential', `${input.accessKeyId}/${formatAmzDate(input.date).slice(0, 8)}/${input.region}/${service}/${TERMINATOR}`],
    ['X-Amz-Date', formatAmzDate(input.date)],
    ['X-Amz-Expires', String(input.expiresSeconds)],
    ['X-Amz-SignedHeaders', signedHeaders.join(';')]
  ].map(([name, value]) => `${name}=${uriEncode(value)}`).join('&')
  const query = input.query === '' ? auth : `${input.query}&${auth}`
  const { signature } = clientSignature(input, query, UNSIGNED_PAYLOAD)
  return `${query}&X-Amz-Signature=${signature}`
}

function clientSignedHeaders (input: SignRequestInput | PresignInput): string[] {
  return input.signedHeaders ?? Object.keys(input.headers).map((name) => name.toLowerCase()).sort()
}

function clientSignature (input: SignRequestInput | PresignInput, query: string, payloadHash: string): { scope: string, signedHeaders: string[], signature: string } {
  const service = input.service ?? SERVICE
  const amzDate = formatAmzDate(input.date)
  const date = amzDate.slice(0, 8)
  const scope = `${date}/${input.region}/${service}/${TERMINATOR}`
  const headers: RequestHeaders = {}
  for (const [name, value] of Object.entries(input.headers)) headers[name.toLowerCase()] = value
  const signedHeaders = clientSignedHeaders(input)
  const canonical = canonicalRequest(input.method, input.path, canonicalQuery(query), headers, signedHeaders, payloadHash)
  const signature = createHmac('sha256', deriveSigningKey(input.secret, date, input.region, service)).update(stringToSign(amzDate, scope, canonical), 'utf8').digest('hex')
  return { scope, signedHeaders, signature }
}
