import type { Connection, PeerId, Stream, StreamHandler } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import pino from 'pino'
import { BkgError } from '../../lib/bkg-error.ts'
import type { ProtocolStreams } from '../../node/p2p/index.ts'
import type { CallOptions, ChatEvent, ChatRequest, EmbedRequest, EmbedResult, InferenceBackend, ModelId, Provenance } from '../../node/llm/types.ts'
import { makePeerId } from '../pubsub/fake-gossipsub.ts'

/**
 * Fakes for the peer inference tests: hosts whose streams are real length-prefixed libp2p
 * stream pairs (@libp2p/utils' streamPair, as test/models/model-service.test.ts does), and a
 * local backend that "generates" numbered tokens one event-loop turn apart and records what
 * happened to it (tokens made, the abort, its end).
 */

export const log = pino({ level: 'silent' })
export const SHA = 'ab'.repeat(32)
export const MODEL = 'tiny@1.0.0'

/** One node's host as the infer code sees it: handlers, dials (a fresh stream pair each), and kill. */
export class FakeHost {
  readonly peerId: PeerId
  readonly handlers = new Map<string, StreamHandler>()
  /** inbound streams, so kill() can reset them as a dying process would */
  readonly inbound = new Set<Stream>()
  dials = 0
  private readonly net: Map<string, FakeHost>
  private dead = false

  constructor (peerId: PeerId, net: Map<string, FakeHost>) {
    this.peerId = peerId
    this.net = net
    net.set(peerId.toString(), this)
  }

  get id (): string {
    return this.peerId.toString()
  }

  readonly streams: ProtocolStreams = {
    handle: async (protocol: string, handler: StreamHandler) => { this.handlers.set(protocol, handler) },
    unhandle: async (protocol: string) => { this.handlers.delete(protocol) },
    dialProtocol: async (peer: PeerId, protocol: string) => {
      this.dials++
      const remote = this.net.get(peer.toString())
      const handler = remote?.handlers.get(protocol)
      if (remote == null || remote.dead || handler == null) throw new Error(`${peer.toString()} does not speak ${protocol}`)
      const [outbound, inbound] = await streamPair({ protocol })
      remote.inbound.add(inbound)
      inbound.addEventListener('close', () => remote.inbound.delete(inbound))
      void handler(inbound, { remotePeer: this.peerId } as unknown as Connection)
      return outbound
    }
  } as unknown as ProtocolStreams

  /** The process dies: its streams reset, and nobody can dial it. */
  kill (): void {
    this.dead = true
    for (const stream of this.inbound) stream.abort(new Error('killed'))
  }
}

export async function fakeNet (n: number): Promise<FakeHost[]> {
  const net = new Map<string, FakeHost>()
  const hosts: FakeHost[] = []
  for (let i = 0; i < n; i++) hosts.push(new FakeHost(await makePeerId(), net))
  return hosts
}

export interface FakeBackendOptions {
  /** tokens a chat generates (Infinity: until cancelled) */
  tokens?: number
  /** thrown after `start`, before any token */
  failBeforeFirstToken?: () => Error
  /** thrown after this many tokens */
  failAfterTokens?: { tokens: number, error: () => Error }
  /** thrown before the chat starts (a full queue) */
  refuse?: () => Error
  /** called as each token is made, before it is handed out (a test can kill the host there) */
  onToken?: (n: number) => void
}

export function busyError (retryAfterSeconds: number): BkgError {
  return Object.assign(new BkgError('llm_busy', 429, 'all slots busy'), { retryAfterSeconds })
}

/** A backend that records what happened to its requests; `servedBy` is its host's PeerId. */
export class FakeBackend implements InferenceBackend {
  readonly servedBy: string
  options: FakeBackendOptions
  produced = 0
  /** tokens made when the abort signal fired */
  producedAtAbort: number | null = null
  finished = false
  readonly calls: Array<{ model: ModelId, principal: string | undefined }> = []

  constructor (servedBy: string, options: FakeBackendOptions = {}) {
    this.servedBy = servedBy
    this.options = options
  }

  provenance (model: ModelId): Provenance {
    return { model, modelSha256: SHA, backend: 'fake', servedBy: this.servedBy, viaPeer: false, deterministic: false }
  }

  async * chat (request: ChatRequest & { model: ModelId }, options: CallOptions): AsyncGenerator<ChatEvent> {
    this.calls.push({ model: request.model, principal: options.principal })
    const { signal } = options
    const onAbort = (): void => { this.producedAtAbort ??= this.produced }
    signal?.addEventListener('abort', onAbort)
    try {
      if (this.options.refuse != null) throw this.options.refuse()
      yield { type: 'start', provenance: this.provenance(request.model) }
      if (this.options.failBeforeFirstToken != null) throw this.options.failBeforeFirstToken()
      const limit = Math.min(this.options.tokens ?? 5, request.maxTokens ?? Infinity)
      let text = ''
      for (let i = 0; i < limit; i++) {
        // one turn of the event loop per token, as a model's evaluation would take
        await new Promise((resolve) => setImmediate(resolve))
        if (signal?.aborted === true) return
        if (this.options.failAfterTokens != null && i === this.options.failAfterTokens.tokens) throw this.options.failAfterTokens.error()
        const piece = `t${i} `
        this.produced++
        this.options.onToken?.(this.produced)
        text += piece
        yield { type: 'text', text: piece, tokens: 1 }
      }
      yield {
        type: 'done',
        result: {
          ...this.provenance(request.model),
          id: 'chatcmpl-1',
          text,
          toolCalls: [],
          finishReason: 'length',
          usage: { promptTokens: 3, completionTokens: this.produced, totalTokens: 3 + this.produced },
          timings: { queuedMs: 0, firstTokenMs: 1, totalMs: 2 },
          failedPeers: []
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort)
      this.finished = true
    }
  }

  async embed (request: EmbedRequest & { model: ModelId }, options: CallOptions): Promise<EmbedResult> {
    this.calls.push({ model: request.model, principal: options.principal })
    if (this.options.refuse != null) throw this.options.refuse()
    return {
      ...this.provenance(request.model),
      dimensions: 3,
      embeddings: request.input.map((text) => [text.length, 0, 1]),
      usage: { promptTokens: request.input.length, totalTokens: request.input.length }
    }
  }
}

export async function collect<T> (iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of iterable) out.push(item)
  return out
}

export const chatRequest = (extra: Partial<ChatRequest> = {}): ChatRequest & { model: ModelId } => ({
  model: MODEL,
  messages: [{ role: 'user', content: 'hello' }],
  ...extra
})
