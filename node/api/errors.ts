import type { Duplex } from 'node:stream'
import type { ConnectionError, FastifyError, FastifyInstance } from 'fastify'
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod'
import { BkgError } from '../../lib/bkg-error.ts'

export function errorBody (code: string, message: string): { error: { code: string, message: string } } {
  return { error: { code, message } }
}

/** Every failure leaves the API in the same shape, whatever threw it. */
export function installErrorHandlers (app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | BkgError | Error, request, reply) => {
    if (err instanceof BkgError) {
      return reply.status(err.status).send(errorBody(err.code, err.message))
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation.map((entry) => ({ ...entry.params, code: entry.keyword, message: entry.message ?? 'invalid', path: entry.instancePath.split('/').slice(1).filter((key) => key !== '') }))
      return reply.status(400).send(errorBody('invalid_request', describeIssues(err.validationContext ?? 'request', issues as ValidationIssue[])))
    }
    const status = (err as FastifyError).statusCode ?? 500
    if (status >= 500) {
      request.log.error({ err }, 'request failed')
      return reply.status(500).send(errorBody('internal', 'internal error; see the node log'))
    }
    // the codes docs/api.md lists for these statuses (malformed JSON is a 400 invalid_request)
    const fastifyCode = (err as FastifyError).code
    const code = fastifyCode === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
      ? 'unsupported_media_type'
      : fastifyCode === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 'body_too_large' : STATUS_CODES[status] ?? 'bad_request'
    const message = code === 'body_too_large' ? `the request body is larger than ${request.routeOptions.bodyLimit ?? 'the limit'} bytes` : err.message
    return reply.status(status).send(errorBody(code, message))
  })
  app.setNotFoundHandler((request, reply) => {
    // auth (preParsing) lets not-found requests through, so an unknown path is a 404 with or without a token
    return reply.status(404).send(errorBody('not_found', `no route ${request.method} ${request.url.split('?')[0]}`))
  })
}

/**
 * Reason phrases of the statuses the HTTP parser's refusals use. Not node:http's STATUS_CODES: an
 * ESM import of node:http builds its whole namespace, which loads undici and web streams into
 * every node (+4 MiB RSS, measured).
 */
const httpStatusText: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' }

/** Is this request for the S3-compatible endpoint, which answers errors as S3 XML? */
export function isS3Path (url: string): boolean {
  return url === '/s3' || url.startsWith('/s3/') || url.startsWith('/s3?')
}

/**
 * What the HTTP parser refuses before any route runs (headers too large, a malformed request
 * line), in the API's shape (S3's for /s3) instead of Node's or Fastify's.
 */
export function clientErrorHandler (err: ConnectionError, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, code, s3Code, message]: [number, string, string, string] = err.code === 'HPE_HEADER_OVERFLOW'
    ? [431, 'headers_too_large', 'RequestHeaderSectionTooLarge', 'the request line and headers exceed 16 KiB']
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'request_timeout', 'RequestTimeout', 'the request did not arrive in time']
      : [400, 'invalid_request', 'BadRequest', `malformed HTTP request (${err.code ?? 'parse error'})`]
  // Node hands over the bytes it could not parse as a Buffer (Fastify's type shows its JSON form)
  const raw: unknown = err.rawPacket
  const path = /^[A-Z]+ (\S+)/.exec(Buffer.isBuffer(raw) ? raw.toString('latin1') : '')?.[1] ?? ''
  const s3 = isS3Path(path)
  const body = s3
    ? `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${s3Code}</Code><Message>${message}</Message></Error>`
    : JSON.stringify(errorBody(code, message))
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${httpStatusText[status]}\r\nContent-Type: ${s3 ? 'application/xml' : 'application/json'}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/** The router's refusals: a path that is not valid percent-encoded UTF-8, or a path segment too long to route. */
export function routerRefusal (err: FastifyError): { status: number, code: string, s3Code: string, message: string } {
  return err.code === 'FST_ERR_MAX_PARAM_LENGTH'
    ? { status: 414, code: 'uri_too_long', s3Code: 'InvalidURI', message: 'a path segment is too long' }
    : { status: 400, code: 'invalid_request', s3Code: 'InvalidURI', message: 'the path is not valid percent-encoded UTF-8' }
}

const STATUS_CODES: Record<number, string> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  413: 'body_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited'
}

/** A zod issue as fastify-type-provider-zod hands it on (path as keys; union branches nested). */
export interface ValidationIssue {
  code: string
  path: Array<string | number>
  message: string
  errors?: Array<Array<Omit<ValidationIssue, 'path'> & { path: PropertyKey[] }>>
  keys?: string[]
  origin?: string
  maximum?: number | bigint
  minimum?: number | bigint
  inclusive?: boolean
  expected?: string
}

const MAX_REPORTED = 3

/**
 * One line naming each offending field and what it must be, e.g. `body.events: at most 1000
 * items` or `body.payload: required`, instead of zod's bare "Invalid input" at the top of a union.
 */
export function describeIssues (context: string, issues: ValidationIssue[]): string {
  const flat = issues.flatMap((issue) => resolveUnion(issue, []))
  const parts = flat.slice(0, MAX_REPORTED).map((issue) => `${where(context, issue.path)}: ${what(issue)}`)
  if (flat.length > MAX_REPORTED) parts.push(`and ${flat.length - MAX_REPORTED} more`)
  return parts.length > 0 ? parts.join('; ') : `${context}: invalid`
}

/** Unions report every branch's issues: keep the branch the input came closest to matching. */
function resolveUnion (issue: ValidationIssue, prefix: Array<string | number>): ValidationIssue[] {
  const path = [...prefix, ...issue.path.map(pathKey)]
  if (issue.code !== 'invalid_union' || issue.errors == null || issue.errors.length === 0) return [{ ...issue, path }]
  const branches = issue.errors.map((branch) => branch.flatMap((inner) => resolveUnion({ ...inner, path: inner.path.map(pathKey) }, path)))
  // every branch wants another type at this very spot (z.json(), string-or-array): one issue
  if (branches.every((branch) => branch.length === 1 && branch[0].code === 'invalid_type' && branch[0].path.length === path.length)) {
    if (new Set(branches.map((branch) => branch[0].message)).size === 1) return [{ ...branches[0][0], path }]
    const expected = [...new Set(branches.map((branch) => branch[0].expected ?? '?'))]
    const missing = branches.every((branch) => / received undefined$/.test(branch[0].message))
    return [{ code: 'invalid_type', path, message: missing ? 'required' : `expected ${expected.join(' or ')}` }]
  }
  const cost = (branch: ValidationIssue[]): number => branch.reduce((sum, inner) => sum + (inner.keys?.length ?? 1), 0)
  const depth = (branch: ValidationIssue[]): number => Math.max(0, ...branch.map((inner) => inner.path.length))
  let best = branches[0]
  for (const branch of branches.slice(1)) {
    if (cost(branch) < cost(best) || (cost(branch) === cost(best) && depth(branch) > depth(best))) best = branch
  }
  return best
}

function pathKey (key: PropertyKey): string | number {
  return typeof key === 'number' ? key : typeof key === 'string' && /^\d+$/.test(key) ? Number(key) : String(key)
}

function where (context: string, path: Array<string | number>): string {
  const [first, ...rest] = path
  const tail = rest.map((key) => typeof key === 'number' ? `[${key}]` : `.${key}`).join('')
  if (context === 'querystring' && first != null) return `query parameter ${first}${tail}`
  if (context === 'params' && first != null) return `path parameter ${first}${tail}`
  if (context === 'headers' && first != null) return `header ${first}${tail}`
  return first == null ? context : `${context}${typeof first === 'number' ? `[${first}]` : `.${first}`}${tail}`
}

function what (issue: ValidationIssue): string {
  const { message } = issue
  if (issue.code === 'invalid_type') {
    if (/ received undefined$/.test(message)) return 'required'
    return message.replace(/^Invalid input: /, '')
  }
  if (issue.code === 'unrecognized_keys' && issue.keys != null) {
    return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((key) => JSON.stringify(key)).join(', ')}`
  }
  if ((issue.code === 'too_big' || issue.code === 'too_small') && /^Too (big|small):/.test(message)) {
    const big = issue.code === 'too_big'
    const limit = big ? issue.maximum : issue.minimum
    const bound = `${big ? 'at most' : 'at least'} ${String(limit)}`
    const exclusive = issue.inclusive === false ? `${big ? 'less' : 'more'} than ${String(limit)}` : bound
    if (issue.origin === 'array' || issue.origin === 'set') return `${exclusive} items`
    if (issue.origin === 'string') return `${exclusive} characters`
    return exclusive
  }
  // custom messages often begin with their own field name ("namespace: 1-63 of …"), which the path already says
  const last = issue.path[issue.path.length - 1]
  return last != null && message.startsWith(`${last}: `) ? message.slice(String(last).length + 2) : message
}
