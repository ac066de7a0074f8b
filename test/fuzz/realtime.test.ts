/**
 * API fuzz suite, streaming half: WebSocket `/realtime` frames (protocols/realtime.ts) and the SSE
 * stream `GET /api/v1/events/stream`. Frames are valid-shaped client messages mixed with hostile
 * ones (deep nesting, huge numbers and cursors, NUL and lone surrogates, wrong types, invalid
 * channels, frames over the 128 KiB limit, invalid UTF-8 text, binary). Every connection must end
 * in a reply to a final heartbeat or a clean close (a close frame, never code 1006), every server
 * message must be JSON with a `type`, and the node must keep answering /api/v1/health.
 * Seed and counts: BKG_FUZZ_SEED, BKG_FUZZ_RUNS (test/fuzz/kit.ts, docs/api.md "Fuzzing").
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import {
  anyUnitString, contractProblem, deepJson, fuzzScale, fuzzSeed, HOSTILE_NUMBERS, hostileJsonValue, hostileString, pool, RawJson,
  send, startFuzzNode, summariseLog, toJsonText, truncate, encodeComponent, describeCase, errorCodeOf, type FuzzNode, type HttpCase
} from './kit.ts'

const SEED = fuzzSeed()
const SCALE = fuzzScale(2400)
const CONNECTIONS = Math.max(1, Math.round(240 * SCALE))
const SSE_CASES = Math.max(1, Math.round(300 * SCALE))
const WS_CONCURRENCY = 4
const FINAL_REPLY_MS = 8000

type TokenKind = 'admin' | 'ns-reader' | 'ns-writer' | 'ns-admin' | 'other-ns-writer'

/** One frame as sent: text (JSON or not), text that is not UTF-8, or binary. */
interface Frame { kind: 'text' | 'bad-utf8' | 'binary', data: string | Buffer, note: string }

const text = (value: unknown, note?: string): Frame => {
  const data = typeof value === 'string' ? value : toJsonText(value)
  return { kind: 'text', data, note: note ?? truncate(data, 300) }
}

const channel = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('events:alpha', 'room:alpha:lobby', 'room:alpha:x', 'events:beta', 'room:beta:x', 'events:gamma', 'room:gamma:x') },
  { weight: 3, arbitrary: fc.constantFrom('room:alpha:', 'events:ALPHA', 'events:', 'room::x', 'room:alpha:x:y', 'events:alpha\u0000', 'room:alpha:\ud800', 'room:alpha:' + 'x'.repeat(65), 'events:' + 'a'.repeat(64), 'presence:alpha', ':', '') },
  { weight: 2, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 1, [], {}, ['events:alpha']) }
)

const cursor = fc.oneof(
  fc.constantFrom('0', '1', '99999999999999999999999999', '18446744073709551616', '9223372036854775807', '9223372036854775808', '-1', '1e308', 'NaN', '00000000000000000000000000000000000000001', 'ev_unknown', '\u0000', '\ud800'),
  hostileString
)

const smallJson = fc.oneof(fc.record({ n: fc.integer(), s: fc.string({ maxLength: 8 }) }), fc.jsonValue({ maxDepth: 2 }))

/** Valid-shaped client messages of every type. */
const validMessage: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.record({ type: fc.constant('join'), ref: fc.constantFrom('j1', 'j2'), channel, config: fc.option(fc.record({ type: fc.constantFrom('t.one', 'x'), filter: fc.array(fc.constantFrom('n=eq.1', 'n=gt.99999999999999999999999999', 'a.b=in.(1,2)', 'x=eq.\u0000', 'bogus', 'n=lte.1e400'), { maxLength: 3 }), after: cursor, self: fc.boolean() }, { requiredKeys: [] }), { nil: undefined }) }, { requiredKeys: ['type', 'ref', 'channel'] }),
  fc.record({ type: fc.constant('leave'), ref: fc.constant('l1'), channel }),
  fc.record({ type: fc.constant('broadcast'), ref: fc.option(fc.constant('b1'), { nil: undefined }), channel, event: fc.constantFrom('move', 'chat', ''), payload: smallJson }, { requiredKeys: ['type', 'channel', 'event', 'payload'] }),
  fc.record({ type: fc.constant('presence'), ref: fc.option(fc.constant('p1'), { nil: undefined }), channel, key: fc.option(fc.constantFrom('me', 'k'), { nil: undefined }), state: fc.oneof(fc.constant(null), fc.dictionary(fc.string({ maxLength: 6 }), smallJson, { maxKeys: 3 })) }, { requiredKeys: ['type', 'channel', 'state'] }),
  fc.record({ type: fc.constant('heartbeat'), ref: fc.constant('h1') }),
  fc.record({ type: fc.constant('access_token'), ref: fc.constant('a1'), token: fc.constantFrom('bkg_invalid', '', 'x'.repeat(3000)) })
)

function mutate (message: Record<string, unknown>, how: number, hostile: unknown, extra: string): Record<string, unknown> {
  const keys = Object.keys(message).filter((key) => message[key] !== undefined)
  const copy = { ...message }
  if (how % 5 === 4) {
    copy[extra] = hostile
    return copy
  }
  const key = keys[how % keys.length]
  if (key === 'config' && typeof copy.config === 'object' && copy.config != null && how % 2 === 0) {
    copy.config = { ...(copy.config as object), after: hostile }
    return copy
  }
  copy[key] = hostile
  return copy
}

const depths = fc.constantFrom(2000, 3000, 5000, 10_000)

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  { weight: 20, arbitrary: validMessage.map((message) => text(message)) },
  {
    weight: 30,
    arbitrary: fc.tuple(validMessage, fc.nat(), hostileJsonValue, fc.constantFrom('x', '__proto__', 'ref', 'state')).map(([message, how, hostile, extra]) => {
      const mutated = mutate(message, how, hostile, extra)
      return text(mutated, hostile instanceof RawJson ? truncate(toJsonText(mutate(message, how, `<${hostile.label}>`, extra)), 300) : undefined)
    })
  },
  {
    // the frames of issue 10 point 1, and their relatives in every nestable field
    weight: 12,
    arbitrary: fc.tuple(depths, fc.constantFrom<'array' | 'object' | 'mixed'>('array', 'object', 'mixed'), fc.constantFrom('presence', 'broadcast', 'join-filter', 'join-config', 'ref', 'top', 'heartbeat-extra')).map(([depth, kind, where]) => {
      const deep = deepJson(depth, kind)
      const frames: Record<string, unknown> = {
        presence: { type: 'presence', channel: 'room:alpha:x', state: { a: deep } },
        broadcast: { type: 'broadcast', channel: 'room:alpha:x', event: 'e', payload: { a: deep } },
        'join-filter': { type: 'join', ref: 'j', channel: 'events:alpha', config: { filter: [deep] } },
        'join-config': { type: 'join', ref: 'j', channel: 'events:alpha', config: deep },
        ref: { type: 'heartbeat', ref: deep },
        top: deep,
        'heartbeat-extra': { type: 'heartbeat', ref: 'h', x: deep }
      }
      const value = frames[where]
      const note = toJsonText(JSON.parse(JSON.stringify(value === deep ? `<${deep.label}>` : value, (_k, v) => v instanceof RawJson ? `<${v.label}>` : v)))
      return text(value, note)
    })
  },
  { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((value) => text(value)) },
  { weight: 6, arbitrary: fc.oneof(anyUnitString(200), fc.constantFrom('', '{', '{"type":', 'null', '[]', '"join"', '{"type":"join"}', '{"type":"\u0000"}', '{"type":"presence","channel":"room:alpha:x","state":{"a":1}', '\u0000')).map((value) => text(value)) },
  { weight: 3, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 512 }).map((bytes) => ({ kind: 'binary' as const, data: Buffer.from(bytes), note: `${bytes.length} binary bytes` })) },
  { weight: 3, arbitrary: fc.constantFrom(Buffer.from([0xff, 0xfe, 0x7b]), Buffer.from('{"type":"heartbeat","ref":"\xed\xa0\x80"}', 'latin1'), Buffer.from([0xc0, 0x80])).map((bytes) => ({ kind: 'bad-utf8' as const, data: bytes, note: `text frame, not UTF-8: ${bytes.toString('hex')}` })) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(131_072 - 80, 131_073, 1_100_000).map((size) => text(
      { type: 'broadcast', channel: 'room:alpha:x', event: 'big', payload: { s: 'x'.repeat(Math.max(0, size - 80)) } },
      `broadcast with a ${size}-byte frame`))
  },
  { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_NUMBERS).map((number) => text({ type: 'join', ref: number, channel: 'events:alpha', config: { after: number } }, `join with ref and after = ${number.label}`)) }
)

interface WsOutcome { problem?: string, closeCode?: number, replies: number }

/** One connection: the frames, then a heartbeat that must be answered (or a clean close). */
async function runConnection (baseUrl: string, token: string, frames: Frame[]): Promise<WsOutcome> {
  const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/realtime?token=${encodeURIComponent(token)}`, { maxPayload: 64 * 1024 * 1024 })
  const problems: string[] = []
  let replies = 0
  let finalReply = false
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)))
  socket.on('error', () => {})
  socket.on('message', (data, isBinary) => {
    if (isBinary) {
      problems.push('server sent a binary frame')
      return
    }
    let message: any
    try {
      message = JSON.parse(data.toString())
    } catch {
      problems.push(`server sent non-JSON: ${truncate(data.toString(), 120)}`)
      return
    }
    if (typeof message?.type !== 'string') problems.push(`server message without a type: ${truncate(data.toString(), 120)}`)
    if (message?.type === 'reply') {
      replies++
      if (message.status === 'error' && (typeof message.error?.code !== 'string' || typeof message.error?.message !== 'string')) problems.push(`error reply without {code,message}: ${truncate(data.toString(), 200)}`)
      if (message.ref === 'fuzz-final') finalReply = true
    }
    if (message?.type === 'error' && typeof message.error?.code !== 'string') problems.push(`error without a code: ${truncate(data.toString(), 200)}`)
  })
  const opened = await new Promise<boolean>((resolve) => {
    socket.once('open', () => resolve(true))
    socket.once('unexpected-response', (_req, res) => {
      problems.push(`upgrade refused with ${res.statusCode}`)
      resolve(false)
    })
    socket.once('error', () => resolve(false))
  })
  if (!opened) return { problem: problems[0] ?? 'WebSocket did not open', replies }
  for (const frame of frames) {
    if (socket.readyState !== WebSocket.OPEN) break
    if (frame.kind === 'text' && typeof frame.data === 'string') socket.send(frame.data)
    else socket.send(frame.data, { binary: frame.kind === 'binary' })
  }
  if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'heartbeat', ref: 'fuzz-final' }))
  const deadline = Date.now() + FINAL_REPLY_MS
  while (!finalReply && socket.readyState !== WebSocket.CLOSED && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  let closeCode: number | undefined
  if (socket.readyState === WebSocket.CLOSED || socket.readyState === WebSocket.CLOSING) {
    closeCode = await Promise.race([closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 3000))])
    // past the 128 KiB limit the server closes with 1009 while the client is still writing: TCP may reset before the close frame is read
    // (and a text frame that is not UTF-8 fails the connection, which RFC 6455 lets the server drop)
    const oversized = frames.some((frame) => frame.data.length > 128 * 1024 || frame.kind === 'bad-utf8')
    if ((closeCode === 1006 && !oversized) || closeCode === -1) problems.push(`connection dropped without a close frame (code ${closeCode})`)
  } else if (!finalReply) {
    problems.push(`no reply to a heartbeat within ${FINAL_REPLY_MS} ms`)
  }
  socket.close()
  return { problem: problems[0], closeCode, replies }
}

interface Failure { key: string, detail: string, count: number, log?: string }

describe('API fuzz (WebSocket /realtime and SSE /api/v1/events/stream)', () => {
  let fz: FuzzNode
  let tokens: Record<TokenKind | 'expired' | 'invalid', string>
  const failures = new Map<string, Failure>()
  const fail = (key: string, detail: string, log?: string): void => {
    const seen = failures.get(key)
    if (seen != null) seen.count++
    else failures.set(key, { key, detail, count: 1, log })
  }

  beforeAll(async () => {
    fz = await startFuzzNode('fuzz-rt')
    const admin = fz.node.token
    const token = async (namespace: string, role: string, ttl = '1d'): Promise<string> => {
      const answer = await fz.node.api('POST', '/api/v1/tokens', { namespace, role, ttl }, admin)
      if (answer.status !== 200) throw new Error(`setup: token answered ${answer.status}`)
      return answer.body.token
    }
    tokens = {
      admin,
      'ns-reader': await token('alpha', 'reader'),
      'ns-writer': await token('alpha', 'writer'),
      'ns-admin': await token('alpha', 'admin'),
      'other-ns-writer': await token('beta', 'writer'),
      expired: await token('alpha', 'reader', '1s'),
      invalid: 'bkg_not-a-real-token'
    }
    const events = await fz.node.api('POST', '/api/v1/events', { events: [1, 2, 3].map((n) => ({ namespace: 'alpha', type: 't.one', payload: { n, a: { b: n } } })) }, admin)
    if (events.status !== 201) throw new Error(`setup: events answered ${events.status}`)
    await new Promise((resolve) => setTimeout(resolve, 1100))
  }, 120_000)

  afterAll(async () => {
    await fz?.close()
  })

  /** after a death: restart, then send the suspects alone, one per connection, until one kills the node */
  async function isolate (suspects: Array<{ token: TokenKind, frame: Frame }>): Promise<{ token: TokenKind, frame: Frame } | undefined> {
    await fz.restart()
    const deadline = Date.now() + 30_000
    for (const suspect of suspects) {
      if (Date.now() > deadline) break
      await runConnection(fz.url(), tokens[suspect.token], [suspect.frame]).catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 50))
      if (!(await fz.healthy()).ok) {
        await fz.restart()
        return suspect
      }
    }
    return undefined
  }

  it('WebSocket frames: replies or clean closes, never a dead node', async () => {
    const started = Date.now()
    const connections = fc.sample(fc.record({
      token: fc.constantFrom<TokenKind>('admin', 'ns-reader', 'ns-writer', 'ns-writer', 'ns-admin', 'other-ns-writer'),
      frames: fc.array(frameArb, { minLength: 1, maxLength: 6 })
    }), { seed: SEED, numRuns: CONNECTIONS })
    process.stdout.write(`[fuzz realtime] seed ${SEED} (BKG_FUZZ_SEED), ${connections.length} connections, ${connections.reduce((n, c) => n + c.frames.length, 0)} frames\n`)
    for (let offset = 0; offset < connections.length; offset += WS_CONCURRENCY * 4) {
      const batch = connections.slice(offset, offset + WS_CONCURRENCY * 4)
      const at = Date.now()
      const outcomes: Array<{ problem?: string, token: TokenKind, frames: Frame[] }> = []
      await pool(batch, WS_CONCURRENCY, async ({ token, frames }) => {
        const outcome = await runConnection(fz.url(), tokens[token], frames).catch((err: Error) => ({ problem: err.message }))
        outcomes.push({ problem: outcome.problem, token, frames })
      })
      const health = await fz.healthy()
      if (!health.ok) {
        const log = summariseLog(fz.logsSince(at))
        const suspects = outcomes.flatMap((o) => o.frames.map((frame) => ({ token: o.token, frame }))).sort((a, b) => Number(/×/.test(b.frame.note)) - Number(/×/.test(a.frame.note)))
        const culprit = await isolate(suspects)
        fail(`WS: node died (${health.why})${culprit != null ? ` on a frame like ${truncate(culprit.frame.note, 80)}` : ''}`,
          culprit != null ? `frame (token ${culprit.token}): ${culprit.frame.note}` : `one of these frames: ${suspects.map((s) => truncate(s.frame.note, 100)).join(' ; ')}`, log)
        if (!(await fz.healthy()).ok) await fz.restart()
        continue
      }
      for (const outcome of outcomes) {
        if (outcome.problem == null) continue
        fail(`WS: ${outcome.problem.replace(/\d+ ms/, 'N ms').replace(/: .*/s, '')}`, `token ${outcome.token}; frames: ${outcome.frames.map((f) => truncate(f.note, 200)).join(' ; ')}; ${outcome.problem}`)
      }
    }
    // the upgrade itself: without a valid token a plain 401 JSON answer
    for (const kind of ['expired', 'invalid', 'none'] as const) {
      const path = kind === 'none' ? '/realtime' : `/realtime?token=${encodeComponent(tokens[kind])}`
      const answer = await send(fz.url(), { method: 'GET', path, headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } })
      if (answer.status !== 401 || contractProblem({ operation: 'GET /realtime', method: 'GET', path, headers: {}, token: kind }, answer) != null) {
        fail(`WS: upgrade with ${kind} token answered ${answer.status}`, truncate(answer.body.toString(), 200))
      }
    }
    const health = await fz.healthy()
    if (!health.ok) fail(`WS: node down at the end (${health.why})`, '')
    process.stdout.write(`[fuzz realtime] WebSocket part took ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
  }, 600_000)

  it('SSE: hostile Last-Event-ID and query params answer JSON errors or a stream, never a 5xx', async () => {
    const started = Date.now()
    const headerSafe = (s: string): string => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?')
    const lastEventId = fc.oneof(
      fc.constantFrom('0', '1', '3', '99999999999999999999999999', '18446744073709551616', '9223372036854775807', '9223372036854775808', '9'.repeat(1000), '0'.repeat(500) + '1', '-1', '1e308', 'NaN', '', ' 1', '1 ', '٣', '\u00ff\u00fe', 'x'.repeat(8000)).map(headerSafe),
      hostileString.map(headerSafe)
    )
    const query = (value: fc.Arbitrary<string>): fc.Arbitrary<string | undefined> => fc.option(value, { nil: undefined, freq: 2 })
    const cases = fc.sample(fc.record({
      token: fc.constantFrom<TokenKind | 'expired' | 'invalid'>('admin', 'ns-reader', 'ns-writer', 'other-ns-writer', 'expired', 'invalid'),
      lastEventId: fc.option(lastEventId, { nil: undefined, freq: 4 }),
      namespace: fc.oneof(fc.constantFrom('alpha', 'alpha', 'beta', 'gamma'), hostileString),
      after: query(fc.oneof(cursor, fc.constantFrom('1', '3'))),
      type: query(fc.oneof(fc.constantFrom('t.one'), hostileString)),
      filter: fc.array(fc.oneof(fc.constantFrom('n=eq.1', 'n=gt.99999999999999999999999999', 'n=in.(1,2)', 'a.b=lte.1e400', 'n=eq.\u0000', 'n=eq.\ud800', '=', 'n=in.(' + '1,'.repeat(2000) + '1)'), hostileString), { maxLength: 3 })
    }), { seed: SEED + 1, numRuns: SSE_CASES })
    process.stdout.write(`[fuzz sse] seed ${SEED + 1}, ${cases.length} cases\n`)
    const problems: Array<{ item: HttpCase, problem: string }> = []
    await pool(cases, 6, async (c) => {
      const params: string[] = [`namespace=${encodeComponent(c.namespace)}`]
      if (c.after != null) params.push(`after=${encodeComponent(c.after)}`)
      if (c.type != null) params.push(`type=${encodeComponent(c.type)}`)
      for (const filter of c.filter) params.push(`filter=${encodeComponent(filter)}`)
      const headers: Record<string, string> = { authorization: `Bearer ${tokens[c.token]}`, accept: 'text/event-stream' }
      if (c.lastEventId != null) headers['last-event-id'] = c.lastEventId
      const item: HttpCase = { operation: 'GET /api/v1/events/stream', method: 'GET', path: `/api/v1/events/stream?${params.join('&')}`, headers, token: c.token }
      try {
        const answer = await send(fz.url(), item, 15_000)
        const problem = contractProblem(item, answer)
        if (problem != null) {
          problems.push({ item, problem: `${problem} ${errorCodeOf(answer)}` })
          return
        }
        if (answer.status === 200) {
          const first = answer.body.toString('utf8')
          if (!String(answer.headers['content-type']).startsWith('text/event-stream') || !/^event: (subscribed|event)\n/m.test(first)) problems.push({ item, problem: `200 but not an event stream starting with subscribed: ${truncate(first, 200)}` })
        }
      } catch (err) {
        problems.push({ item, problem: `no HTTP answer: ${(err as Error).message}` })
      }
    })
    const health = await fz.healthy()
    if (!health.ok) fail(`SSE: node died (${health.why})`, problems.map((p) => describeCase(p.item)).slice(0, 5).join('\n'), summariseLog(fz.logsSince(started)))
    for (const { item, problem } of problems) {
      const key = `SSE: ${problem.replace(/: .*/s, '')}`
      if (failures.has(key)) {
        failures.get(key)!.count++
        continue
      }
      const at = Date.now()
      await send(fz.url(), item, 15_000).catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 150))
      fail(key, `${problem}\n  ${describeCase(item).replace(/\n/g, '\n  ')}`, summariseLog(fz.logsSince(at)))
    }
    process.stdout.write(`[fuzz sse] took ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
  }, 300_000)

  it('reports every distinct failure (seeded, replayable)', () => {
    const report = [...failures.values()].map((f, index) => `#${index + 1} ${f.key} (${f.count}×)\n  ${f.detail}${f.log != null ? `\n  node log: ${f.log}` : ''}`).join('\n\n')
    process.stdout.write(`[fuzz realtime+sse] seed ${SEED}: ${failures.size} distinct failures\n${report}\n`)
    expect(failures.size, `seed ${SEED}: ${failures.size} distinct failures\n\n${report}`).toBe(0)
  })
})
