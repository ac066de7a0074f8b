/**
 * A fake LlmApi for the HTTP, WebSocket, OpenAI and CLI tests: chats stream text pieces from a
 * script, each generated only when the consumer pulls (as the real service's stream is), and
 * every call records how many pieces it produced, whether its signal fired and when, and whether
 * its iterator was returned. Also an API server (createApiServer) around it.
 */
import pino from 'pino'
import { BkgError } from '../../lib/bkg-error.ts'
import { createApiServer, type ApiServer, type ApiServices } from '../../node/api/server.ts'
import { createNamespaceToken } from '../../node/auth/index.ts'
import type { CallOptions, ChatEvent, ChatRequest, ChatResult, EmbedRequest, LlmApi, LlmModelInfo, MeshModel, Provenance } from '../../node/llm/index.ts'

export const FAKE_PEER = '12D3KooWFakeServingPeer'
export const FAKE_MODEL = 'tiny@1.0.0'
export const FAKE_SHA = 'ab'.repeat(32)

export interface FakeScript {
  /** text pieces to stream (default 5); Infinity streams until cancelled */
  pieces: number
  /** the text of piece i */
  piece: (index: number) => string
  /** awaited before each piece is produced */
  pace: () => Promise<void>
  /** refuse every chat and embed as a busy node does */
  busy: number | null
  /** fail (a BkgError) after this many pieces */
  failAfter: number | null
  /** throw from the first next() instead of streaming */
  refuse: BkgError | null
}

export interface FakeCall {
  request: ChatRequest
  options: CallOptions
  produced: number
  /** pieces produced when the signal fired, null while it has not */
  abortedAt: number | null
  returned: boolean
  finished: boolean
}

export interface FakeLlm extends LlmApi {
  calls: FakeCall[]
  embedCalls: EmbedRequest[]
  script: FakeScript
  loaded: Set<string>
  defaultId: string | null
}

const info = (fake: FakeLlm, id: string): LlmModelInfo => {
  const [name, version] = id.split('@')
  return {
    id,
    name,
    version,
    file: `${name}.gguf`,
    sha256: FAKE_SHA,
    size: 466_784,
    publisher: { peerId: FAKE_PEER, name: 'fake-publisher' },
    gguf: { version: 3, architecture: 'llama', name, contextLength: 1024, embeddingLength: 8, blockCount: 2, vocabularySize: 258, tensorCount: 19, fileType: 0 },
    loaded: fake.loaded.has(id),
    default: fake.defaultId === id,
    slots: fake.loaded.has(id) ? { busy: 0, total: 4, queued: 0 } : null
  }
}

/** a deterministic 8-dimensional vector of a text */
export function fakeVector (text: string): number[] {
  const vector = Array.from({ length: 8 }, (_, index) => 0.125 * (index + 1))
  for (let i = 0; i < text.length; i++) vector[i % 8] += text.charCodeAt(i) / 1000
  return vector.map((value) => Math.fround(value))
}

export function fakeLlm (script: Partial<FakeScript> = {}): FakeLlm {
  const held = [FAKE_MODEL, 'other@2.0.0']
  const mesh: MeshModel[] = [{ id: 'remote@3.0.0', sha256: 'cd'.repeat(32), peerId: '12D3KooWOtherPeer', slots: { busy: 1, total: 4, queued: 0 }, latencyMs: 3, seenAt: new Date(0).toISOString() }]
  const resolve = (model: string | undefined): string => {
    const id = model ?? fake.defaultId
    if (id == null) throw new BkgError('no_default_model', 400, 'no model given and no default model set')
    if (!fake.loaded.has(id) && !mesh.some((entry) => entry.id === id)) throw new BkgError('model_not_found', 404, `no model ${id} here or on a peer`)
    return id
  }
  const provenanceOf = (model: string, request: { seed?: number }): Provenance => ({
    model,
    modelSha256: FAKE_SHA,
    backend: 'fake@1 (cpu)',
    servedBy: FAKE_PEER,
    viaPeer: false,
    deterministic: request.seed != null
  })
  const busyError = (seconds: number): BkgError => Object.assign(new BkgError('llm_busy', 429, 'every slot of the model is busy and its queue is full'), { retryAfterSeconds: seconds })

  const fake: FakeLlm = {
    calls: [],
    embedCalls: [],
    loaded: new Set([FAKE_MODEL]),
    defaultId: FAKE_MODEL,
    script: {
      pieces: 5,
      piece: (index) => `t${index} `,
      pace: async () => { await new Promise<void>((resolve) => setImmediate(resolve)) },
      busy: null,
      failAfter: null,
      refuse: null,
      ...script
    },
    chat (request, options) {
      const call: FakeCall = { request, options, produced: 0, abortedAt: null, returned: false, finished: false }
      fake.calls.push(call)
      options.signal?.addEventListener('abort', () => { call.abortedAt ??= call.produced }, { once: true })
      const s = fake.script
      return (async function * (): AsyncGenerator<ChatEvent> {
        try {
          if (s.refuse != null) throw s.refuse
          if (s.busy != null) throw busyError(s.busy)
          const model = resolve(request.model)
          const provenance = provenanceOf(model, request)
          const started = Date.now()
          yield { type: 'start', provenance }
          let text = ''
          const calling = request.tools != null && request.toolChoice !== 'none'
          const limit = Math.min(s.pieces, request.maxTokens ?? Infinity)
          // the script running out is the model's end of text; max_tokens cutting it is 'length'
          let finishReason: ChatResult['finishReason'] = limit < s.pieces ? 'length' : 'stop'
          for (let index = 0; index < limit; index++) {
            await s.pace()
            if (options.signal?.aborted === true) {
              finishReason = 'cancelled'
              break
            }
            if (s.failAfter != null && index >= s.failAfter) throw new BkgError('llm_failed', 500, 'the backend failed mid-stream')
            const piece = calling && index === 0
              ? '{"name":"get_time","arguments":{}}'
              : request.responseFormat?.type === 'json_schema' && index === 0 ? '{"name":"ab","n":2}' : s.piece(index)
            call.produced++
            text += piece
            yield { type: 'text', text: piece, tokens: 1 }
            if (request.responseFormat?.type === 'json_schema' || calling) {
              finishReason = 'stop'
              break
            }
          }
          const toolCalls = calling ? [{ id: 'call_' + '0'.repeat(24), name: request.tools![0].name, arguments: '{"zone":"UTC"}' }] : []
          const result: ChatResult = {
            ...provenance,
            id: 'chat_1',
            text: calling ? '' : text,
            toolCalls,
            finishReason: calling ? 'tool_calls' : finishReason,
            usage: { promptTokens: 7, completionTokens: call.produced, totalTokens: 7 + call.produced },
            timings: { queuedMs: 0, firstTokenMs: 1, totalMs: Date.now() - started },
            failedPeers: []
          }
          call.finished = true
          yield { type: 'done', result }
        } finally {
          call.returned = true
        }
      })()
    },
    async embed (request, options) {
      fake.embedCalls.push(request)
      if (fake.script.busy != null) throw busyError(fake.script.busy)
      const model = resolve(request.model)
      const embeddings = request.input.map(fakeVector)
      const tokens = request.input.reduce((sum, text) => sum + Buffer.byteLength(text), 0)
      return { ...provenanceOf(model, {}), dimensions: 8, embeddings, usage: { promptTokens: tokens, totalTokens: tokens } }
    },
    async tokenize (model, text) {
      return { model: resolve(model), tokens: [...Buffer.from(text)], servedBy: FAKE_PEER }
    },
    async detokenize (model, tokens) {
      return { model: resolve(model), text: Buffer.from(tokens).toString('utf8'), servedBy: FAKE_PEER }
    },
    models: () => held.map((id) => info(fake, id)),
    servable: () => [
      ...held.filter((id) => fake.loaded.has(id)).map((id) => ({ id, local: true, peers: [] })),
      ...mesh.map((entry) => ({ id: entry.id, local: false, peers: [entry.peerId] }))
    ],
    meshModels: () => mesh,
    async load (id) {
      if (!held.includes(id)) throw new BkgError('model_not_found', 404, `no model ${id} held here`)
      fake.loaded.add(id)
      return info(fake, id)
    },
    async unload (id) {
      if (!fake.loaded.has(id)) throw new BkgError('model_not_loaded', 409, `${id} is not loaded`)
      fake.loaded.delete(id)
      return info(fake, id)
    },
    setDefault (id) {
      if (id != null && !held.includes(id)) throw new BkgError('model_not_found', 404, `no model ${id} held here`)
      fake.defaultId = id
      return id == null ? null : info(fake, id)
    },
    defaultModel: () => fake.defaultId
  }
  return fake
}

/** what each test starts from: five quick pieces, no refusal */
export const DEFAULT_SCRIPT: FakeScript = { pieces: 5, piece: (index) => `t${index} `, pace: async () => { await new Promise<void>((resolve) => setImmediate(resolve)) }, busy: null, failAfter: null, refuse: null }

/** Puts the fake back to the default script and forgets the calls (a suite's beforeEach). */
export function resetFake (fake: FakeApi): void {
  Object.assign(fake.llm.script, DEFAULT_SCRIPT)
  fake.llm.calls.length = 0
}

export const KEYS = { adminToken: 'admin-token-0123456789abcdef', secret: 'secret-0123456789abcdef0123456789' }

export interface FakeApi {
  api: ApiServer
  url: string
  llm: FakeLlm
  admin: string
  /** a namespace writer token */
  token: string
  close: () => Promise<void>
}

/** The node's API server (all its plugins, auth, error handling) with the fake as its LLM service. */
export async function startFakeApi (script: Partial<FakeScript> = {}): Promise<FakeApi> {
  const llm = fakeLlm(script)
  const metrics = { httpRequests: { inc: () => {} } }
  const services = { metrics, llm } as unknown as ApiServices
  const api = await createApiServer({ log: pino({ level: 'silent' }), keys: KEYS, rateLimitPerMinute: 100_000, services, tls: null })
  const url = await api.listen('127.0.0.1:0')
  const token = createNamespaceToken(KEYS.secret, { namespace: 'lab', role: 'writer', ttlMs: null }).token
  return { api, url, llm, admin: KEYS.adminToken, token, close: async () => { await api.close() } }
}

/** Waits until `check` holds (polling), failing after `ms`: a hang guard, not a timing assertion. */
export async function until (check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Waits until `value` stops changing for `quietMs` (a paused stream has settled). */
export async function settled (value: () => number, quietMs = 300, ms = 20_000): Promise<number> {
  const deadline = Date.now() + ms
  let last = value()
  let since = Date.now()
  while (Date.now() - since < quietMs) {
    if (Date.now() > deadline) throw new Error('the value never settled')
    await new Promise((resolve) => setTimeout(resolve, 10))
    const now = value()
    if (now !== last) {
      last = now
      since = Date.now()
    }
  }
  return last
}
