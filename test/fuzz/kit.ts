/**
 * Shared pieces of the API fuzz suites (test/fuzz/*.test.ts): seed and case counts from the
 * environment, hostile values, a raw HTTP client that sends exactly what it is given, the
 * response contract every answer must keep, and a node harness that captures the node's log and
 * notices when the process has died.
 *
 *   BKG_FUZZ_SEED=<int>       another seed (default FUZZ_DEFAULT_SEED; each suite prints the one it used)
 *   BKG_FUZZ_RUNS=<k>x        k times the default number of cases in every group
 *   BKG_FUZZ_RUNS=<n>         about n HTTP cases in the HTTP suite (other groups scale with it)
 *   BKG_FUZZ_ONLY=<text>      only operations whose "METHOD /path" contains text (replaying one route)
 */
import { request as httpRequest, Agent } from 'node:http'
import { createInterface } from 'node:readline'
import { writeFile } from 'node:fs/promises'
import fc from 'fast-check'
import type { Role } from '../../ca/index.ts'
import { tempDir, TestMesh, type TestNode } from '../helpers/mesh.ts'

export const FUZZ_DEFAULT_SEED = 20261110

export function fuzzSeed (): number {
  const raw = process.env.BKG_FUZZ_SEED
  if (raw == null || raw.trim() === '') return FUZZ_DEFAULT_SEED
  const seed = Number(raw)
  if (!Number.isSafeInteger(seed)) throw new Error(`BKG_FUZZ_SEED=${raw}: expected an integer`)
  return seed | 0
}

/** Multiplier for every group's default case count; `BKG_FUZZ_RUNS=N` (no `x`) aims at N HTTP cases. */
export function fuzzScale (defaultHttpCases: number): number {
  const raw = process.env.BKG_FUZZ_RUNS?.trim()
  if (raw == null || raw === '') return 1
  const multiplier = /^(\d+(?:\.\d+)?)x$/i.exec(raw)
  if (multiplier != null) return Math.max(0.01, Number(multiplier[1]))
  const count = Number(raw)
  if (!Number.isFinite(count) || count <= 0) throw new Error(`BKG_FUZZ_RUNS=${raw}: expected a count (e.g. 20000) or a multiplier (e.g. 5x)`)
  return Math.max(0.01, count / defaultHttpCases)
}

export function onlyFilter (): (operation: string) => boolean {
  const only = process.env.BKG_FUZZ_ONLY
  return (operation) => only == null || only === '' || operation.includes(only)
}

// ------------------------------------------------------------------ hostile values

/** Marks a place in a JSON document where raw JSON text (deep nesting, out-of-range numbers) goes. */
export class RawJson {
  readonly text: string
  readonly label: string
  constructor (text: string, label: string) {
    this.text = text
    this.label = label
  }
}

/** `[[[…]]]` or `{"a":{"a":…}}` nested `depth` levels, as text (JSON.stringify would recurse). */
export function deepJson (depth: number, kind: 'array' | 'object' | 'mixed' = 'array'): RawJson {
  if (kind === 'array') return new RawJson('['.repeat(depth) + ']'.repeat(depth), `[×${depth}]`)
  if (kind === 'object') return new RawJson('{"a":'.repeat(depth) + '1' + '}'.repeat(depth), `{"a":×${depth}}`)
  return new RawJson('[{"a":'.repeat(depth / 2) + 'null' + '}]'.repeat(depth / 2), `[{"a":×${depth / 2}}]`)
}

/**
 * Serialises a value that may hold RawJson leaves anywhere (object values, array items) as JSON
 * text with the raw pieces spliced in.
 */
export function toJsonText (value: unknown): string {
  const raws: RawJson[] = []
  const text = JSON.stringify(value, (_key, v: unknown) => {
    if (v instanceof RawJson) {
      raws.push(v)
      return `\u0001raw${raws.length - 1}\u0001`
    }
    return v
  })
  if (raws.length === 0) return text ?? ''
  return (text ?? '').replace(/"\\u0001raw(\d+)\\u0001"/g, (_m, index: string) => raws[Number(index)].text)
}

export const HOSTILE_STRINGS: readonly string[] = [
  '\u0000', 'a\u0000b', '\ud800', 'x\udfffy', '\udc00\ud800', 'ok\ud83d', '', ' ', '\t', '\r\n', '..', '../../../../etc/passwd',
  '..\\..\\windows', '/', '//', '%00', '%', '%zz', '\u202e', '\ufeff', '\uffff', '💥', 'null', 'undefined', 'true',
  '[]', '{}', '__proto__', 'constructor', "'; DROP TABLE events; --", '$' + '{7*7}', '<x>&amp;</x>',
  '99999999999999999999999999', '18446744073709551616', '9223372036854775808', '-9223372036854775809', '-1', '-0',
  '0', '1e308', '1e400', 'NaN', 'Infinity', '-Infinity', '0x1f', '1.5', '٣', '1 ', ' 1', '+1', '00001',
  'a'.repeat(65), 'a'.repeat(129), 'b'.repeat(1025), 'c'.repeat(5000), '\u0000'.repeat(300), '\ud800'.repeat(300)
]

export const HOSTILE_NUMBERS: readonly RawJson[] = [
  new RawJson('99999999999999999999999999', '99999999999999999999999999'),
  new RawJson('18446744073709551616', '2**64'),
  new RawJson('9223372036854775808', '2**63'),
  new RawJson('-1', '-1'),
  new RawJson('-0', '-0'),
  new RawJson('1e308', '1e308'),
  new RawJson('1e400', '1e400'),
  new RawJson('-1e400', '-1e400'),
  new RawJson('0.5', '0.5'),
  new RawJson('1e-400', '1e-400'),
  new RawJson('9007199254740993', '2**53+1'),
  new RawJson('0' + '1'.repeat(400), '400 digits')
]

/** Strings with any UTF-16 code unit: NUL, controls, lone surrogates. */
export const anyUnitString = (maxLength = 40): fc.Arbitrary<string> =>
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)), maxLength })

export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
  { weight: 2, arbitrary: anyUnitString() },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) }
)

/** Values of the wrong type or beyond every range, for a JSON field of any declared type. */
export const hostileJsonValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: hostileString },
  { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_NUMBERS) },
  { weight: 2, arbitrary: fc.constantFrom<unknown>(null, true, false, 0, -1, 1.5, [], {}, [null], { a: null }, [[[]]], Number.MAX_SAFE_INTEGER) },
  { weight: 2, arbitrary: fc.constantFrom(2000, 3000, 5000, 10_000).chain((depth) => fc.constantFrom(deepJson(depth, 'array'), deepJson(depth, 'object'), deepJson(depth, 'mixed'))) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.dictionary(hostileString, fc.constantFrom<unknown>(1, 'x', null), { maxKeys: 3 }) }
)

/**
 * Percent-encodes every code unit that is not unreserved, lone surrogates included (as the
 * three bytes generalised UTF-8 would use, which is not valid UTF-8: the server must refuse them).
 */
export function encodeComponent (value: string): string {
  let out = ''
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i)
    if (/[A-Za-z0-9\-._~]/.test(value[i])) {
      out += value[i]
      continue
    }
    let point = code
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < value.length) {
      const low = value.charCodeAt(i + 1)
      if (low >= 0xdc00 && low <= 0xdfff) {
        point = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
        i++
      }
    }
    out += utf8Bytes(point).map((byte) => '%' + byte.toString(16).toUpperCase().padStart(2, '0')).join('')
  }
  return out
}

function utf8Bytes (point: number): number[] {
  if (point < 0x80) return [point]
  if (point < 0x800) return [0xc0 | (point >> 6), 0x80 | (point & 63)]
  if (point < 0x10000) return [0xe0 | (point >> 12), 0x80 | ((point >> 6) & 63), 0x80 | (point & 63)]
  return [0xf0 | (point >> 18), 0x80 | ((point >> 12) & 63), 0x80 | ((point >> 6) & 63), 0x80 | (point & 63)]
}

/** A URL piece sent exactly as written (invalid percent escapes, overlong UTF-8, …). */
export class RawUrlPart {
  readonly text: string
  constructor (text: string) { this.text = text }
}

export const RAW_URL_PARTS: readonly string[] = ['%', '%zz', '%00', '%ED%A0%80', '%C0%AF', '%C0%80', '%FF', '%2F', '%252e', '%E2%82', '..%2F..%2F', '%u0000']

export const urlValue = (valid: fc.Arbitrary<string>): fc.Arbitrary<string | RawUrlPart> => fc.oneof(
  { weight: 4, arbitrary: valid },
  { weight: 3, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.constantFrom(...RAW_URL_PARTS).map((text) => new RawUrlPart(text)) }
)

export function urlPart (value: string | RawUrlPart): string {
  return value instanceof RawUrlPart ? value.text : encodeComponent(value)
}

// ------------------------------------------------------------------ raw HTTP

export interface HttpCase {
  /** "METHOD /template" of the operation */
  operation: string
  method: string
  /** path and query exactly as sent */
  path: string
  headers: Record<string, string>
  body?: Buffer
  /** what the body is, for the report (the body itself is printed truncated) */
  bodyNote?: string
  token: string
  /** answers in S3's XML error form */
  s3?: boolean
}

export interface HttpAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  /** the response was a stream (SSE) that the client cut after its first bytes */
  streamed?: boolean
}

const agent = new Agent({ keepAlive: true, maxSockets: 16 })

/** Sends a request byte for byte as given (no URL normalisation); cuts event streams after their first frame. */
export async function send (baseUrl: string, item: Pick<HttpCase, 'method' | 'path' | 'headers' | 'body'>, timeoutMs = 30_000, freshConnection = false): Promise<HttpAnswer> {
  const url = new URL(baseUrl)
  return await new Promise<HttpAnswer>((resolve, reject) => {
    let settled = false
    const done = (err: Error | null, answer?: HttpAnswer): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err != null) reject(err)
      else resolve(answer!)
    }
    const headers: Record<string, string> = { ...item.headers }
    if (item.body != null && !Object.keys(headers).some((name) => name.toLowerCase() === 'content-length')) headers['content-length'] = String(item.body.length)
    const req = httpRequest({ host: url.hostname, port: url.port, method: item.method, path: item.path, headers, agent: freshConnection ? false : agent }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      const eventStream = String(res.headers['content-type'] ?? '').startsWith('text/event-stream')
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk)
        size += chunk.length
        const text = eventStream ? Buffer.concat(chunks).toString('utf8') : ''
        if ((eventStream && text.includes('\n\n')) || size > 4 * 1024 * 1024) {
          res.destroy()
          done(null, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), streamed: true })
        }
      })
      res.on('end', () => done(null, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', (err) => done(err))
      res.on('close', () => done(null, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), streamed: true }))
    })
    // timed from when the request has a connection: waiting in the agent's queue behind long polls is not the node's delay
    let timer: NodeJS.Timeout | undefined
    req.once('socket', () => {
      timer = setTimeout(() => {
        req.destroy()
        done(new Error(`no answer within ${timeoutMs} ms`))
      }, timeoutMs)
    })
    req.on('error', (err) => done(err))
    if (item.body != null) req.end(item.body)
    else req.end()
  })
}

/** Returns what is wrong with an answer (null when it keeps the contract). */
export function contractProblem (item: HttpCase, answer: HttpAnswer, allowed5xx: (item: HttpCase, answer: HttpAnswer) => boolean = () => false): string | null {
  const { status } = answer
  if (status >= 500 && !allowed5xx(item, answer)) return `status ${status}`
  if (status < 400 || status >= 500) return null
  if (item.method === 'HEAD') {
    if (item.s3 === true && answer.headers['x-amz-error-code'] == null) return `S3 HEAD ${status} without x-amz-error-code`
    return null
  }
  const text = answer.body.toString('utf8')
  if (item.s3 === true) {
    if (/^(<\?xml[^>]*\?>\s*)?<Error>[\s\S]*<Code>[^<]+<\/Code>[\s\S]*<\/Error>\s*$/.test(text)) return null
    try {
      const parsed = JSON.parse(text)
      if (typeof parsed?.statusCode === 'number') return `${status} in Fastify's default error shape (${String(parsed.code ?? parsed.message)}), not S3 XML: ${truncate(text, 200)}`
    } catch {}
    // auth failures before the S3 plugin's hooks may legitimately still be JSON: S3 clients see XML only when it is S3 XML
    return `S3 ${status} without an XML <Error><Code>: ${truncate(text, 200)}`
  }
  let parsed: any
  try {
    parsed = JSON.parse(text)
  } catch {
    return `${status} body is not JSON: ${JSON.stringify(truncate(text, 200))}`
  }
  if (typeof parsed?.error?.code !== 'string' || typeof parsed?.error?.message !== 'string') {
    // Fastify's own answers (router, client errors) look like {error, code?, message, statusCode}
    if (typeof parsed?.statusCode === 'number') return `${status} in Fastify's default error shape (${String(parsed.code ?? parsed.message)}), not {error:{code,message}}: ${truncate(text, 200)}`
    return `${status} body is not {error:{code,message}}: ${truncate(text, 200)}`
  }
  return null
}

export function errorCodeOf (answer: HttpAnswer): string {
  const text = answer.body.toString('utf8')
  try {
    const code = JSON.parse(text)?.error?.code
    if (typeof code === 'string') return code
  } catch {}
  return /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? String(answer.headers['x-amz-error-code'] ?? '')
}

export function truncate (text: string, max = 300): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} chars)`
}

/** A printable, replayable description of one case. */
export function describeCase (item: HttpCase): string {
  const [path, query] = item.path.split(/\?(.*)/s)
  const headers = Object.entries(item.headers).filter(([name]) => !/^(authorization|x-amz-date|host)$/i.test(name)).map(([name, value]) => [name, truncate(value, 80)])
  const body = item.body == null ? '(none)' : item.bodyNote ?? JSON.stringify(truncate(item.body.toString('utf8'), 300))
  return [
    `${item.method} ${truncate(path, 300)}`,
    query != null ? `  query: ${truncate(query, 300)}` : null,
    `  token: ${item.token}`,
    headers.length > 0 ? `  headers: ${JSON.stringify(Object.fromEntries(headers))}` : null,
    `  body (${item.body?.length ?? 0} bytes): ${body}`
  ].filter((line) => line != null).join('\n')
}

// ------------------------------------------------------------------ the node under test

export interface LogLine { at: number, line: string }

export interface FuzzNode {
  node: TestNode
  logs: LogLine[]
  url: () => string
  /** the process is running and /api/v1/health answers 200 {status:'ok'} */
  healthy: () => Promise<{ ok: boolean, why?: string }>
  /** starts the node again after it died (same data dir, tokens stay valid) */
  restart: () => Promise<void>
  logsSince: (at: number) => string[]
  close: () => Promise<void>
}

/**
 * One real node (`bkg start` process) with every role a route may ask for, two certified
 * namespaces, a rate limit out of the way, and log level `error` captured so a failure can name
 * what threw (BKG_TEST_LOG=<level> also prints it live).
 */
export async function startFuzzNode (name: string, init: { roles?: Role[], namespaces?: string[] } = {}): Promise<FuzzNode> {
  const tmp = await tempDir(`bkg-fuzz-${name}-`)
  const mesh = await TestMesh.create(tmp.dir)
  const node = await mesh.addNode(name, { roles: init.roles ?? ['admin', 'publisher', 'member', 'relay'], namespaces: init.namespaces ?? ['alpha', 'beta'] })
  await writeFile(node.paths.config, JSON.stringify({ http: { rateLimit: 100_000_000 }, autonat: false }))
  const logs: LogLine[] = []
  const capture = (): void => {
    const child = node.proc!.child
    for (const stream of [child.stdout, child.stderr]) {
      if (stream == null) continue
      createInterface({ input: stream }).on('line', (line) => {
        logs.push({ at: Date.now(), line })
        if (logs.length > 20_000) logs.splice(0, 10_000)
      })
    }
  }
  const start = async (): Promise<void> => {
    await node.start(['--log-level', process.env.BKG_TEST_LOG ?? 'error'])
    capture()
  }
  await start()
  return {
    node,
    logs,
    url: () => node.url,
    async healthy () {
      const proc = node.proc
      if (proc == null) return { ok: false, why: 'not running' }
      if (proc.child.exitCode != null || proc.child.signalCode != null) return { ok: false, why: `process exited (code ${String(proc.child.exitCode)}, signal ${String(proc.child.signalCode)})` }
      try {
        const answer = await send(node.url, { method: 'GET', path: '/api/v1/health', headers: {} }, 10_000)
        const body = JSON.parse(answer.body.toString('utf8'))
        if (answer.status === 200 && body?.status === 'ok') return { ok: true }
        return { ok: false, why: `health answered ${answer.status} ${truncate(answer.body.toString('utf8'), 200)}` }
      } catch (err) {
        return { ok: false, why: `health did not answer: ${(err as Error).message}` }
      }
    },
    async restart () {
      await node.stop('SIGKILL').catch(() => {})
      await start()
    },
    logsSince (at) {
      return logs.filter((entry) => entry.at >= at).map((entry) => entry.line)
    },
    async close () {
      await mesh.stopAll()
      await tmp.remove()
    }
  }
}

/** The first log line that says what threw (pino JSON: msg + err.message + the top of the stack). */
export function summariseLog (lines: string[]): string | undefined {
  for (const line of lines) {
    try {
      const entry = JSON.parse(line)
      if (entry.level != null && entry.level < 50) continue
      const err = entry.err ?? entry.error
      const stack = typeof err?.stack === 'string' ? err.stack.split('\n').slice(0, 3).map((s: string) => s.trim()).join(' | ') : undefined
      return truncate([entry.msg, err?.type, stack ?? err?.message].filter(Boolean).join(': '), 600)
    } catch {
      if (line.trim() !== '') return truncate(line, 600)
    }
  }
  return undefined
}

/** Runs `work` over `items` with `concurrency` in flight. */
export async function pool<T> (items: T[], concurrency: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  const workers = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++
      await work(items[index], index)
    }
  })
  await Promise.all(workers)
}
