import { randomBytes } from 'node:crypto'
import type { ChatWrapper, LlamaContext, LlamaText, LlamaContextSequence, LlamaEmbeddingContext, LlamaGrammar, LlamaModel, Token } from 'node-llama-cpp'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { CallOptions, ChatEvent, ChatRequest, ChatResult, EmbedResult, ModelId, Provenance } from '../types.ts'
import { chatPrompt, readToolOutput, type OutputMode } from './chat-prompt.ts'
import { FairQueue } from './fair-queue.ts'
import { generate } from './generation.ts'
import type { LlamaRuntime } from './llama-runtime.ts'

export interface LoadedModelInit {
  id: ModelId
  sha256: string
  path: string
  /** sequences generating at once in the shared context (continuous batching) */
  parallel: number
  /** tokens per sequence, at most the model's training context */
  contextSize: number
  threads: number
  /** requests that may wait for a sequence beyond those running */
  maxQueued: number
  /** from the GGUF header: token ids are below it */
  vocabularySize: number
}

/** What the service learns of each request, for metrics. */
export interface GenerationObserver {
  firstToken: (ms: number) => void
  finished: (tokens: number, generatingMs: number) => void
}

const GRAMMAR_CACHE_SIZE = 32
/** how long an unload waits for running requests to end before it frees the model under them */
const UNLOAD_GRACE_MS = 2000

/**
 * A GGUF model loaded into node-llama-cpp with one context of `parallel` sequences that the
 * context batches together (continuous batching), and a separate single-sequence context for
 * deterministic (seeded) requests: a sequence batched with others can see different floating-point
 * sums depending on what else is in the batch (llama.cpp #7052), so a seeded request runs alone,
 * with a fixed thread count and from an empty sequence. It costs that context's memory and that
 * seeded requests queue for one sequence instead of sharing the batch.
 */
export class LoadedModel {
  readonly id: ModelId
  readonly sha256: string
  readonly init: LoadedModelInit
  readonly queue: FairQueue
  readonly deterministicQueue: FairQueue
  private readonly embedQueue: FairQueue
  private readonly runtime: LlamaRuntime
  private readonly model: LlamaModel
  private readonly shared: LlamaContext
  private readonly free: LlamaContextSequence[]
  private readonly wrapper: ChatWrapper
  private deterministic?: Promise<LlamaContextSequence>
  private embedding?: Promise<LlamaEmbeddingContext>
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>()
  private readonly stopsByTemplate = new Map<string, { strings: string[], tokens: ReadonlySet<Token> }>()
  private readonly running = new Set<AbortController>()
  private disposed = false
  private onIdle?: () => void

  private constructor (init: LoadedModelInit, runtime: LlamaRuntime, model: LlamaModel, shared: LlamaContext, wrapper: ChatWrapper) {
    this.id = init.id
    this.sha256 = init.sha256
    this.init = init
    this.runtime = runtime
    this.model = model
    this.shared = shared
    this.wrapper = wrapper
    this.free = Array.from({ length: init.parallel }, () => shared.getSequence())
    this.queue = new FairQueue({ slots: init.parallel, maxWaiting: init.maxQueued, label: init.id })
    this.deterministicQueue = new FairQueue({ slots: 1, maxWaiting: init.maxQueued, label: `${init.id} (deterministic)` })
    this.embedQueue = new FairQueue({ slots: 1, maxWaiting: init.maxQueued, label: `${init.id} (embeddings)` })
  }

  static async load (init: LoadedModelInit, runtime: LlamaRuntime): Promise<LoadedModel> {
    const llama = await runtime.llama()
    const { resolveChatWrapper } = await import('node-llama-cpp')
    const model = await llama.loadModel({ modelPath: init.path })
    try {
      const contextSize = Math.min(init.contextSize, model.trainContextSize)
      const shared = await model.createContext({ contextSize, sequences: init.parallel, threads: init.threads })
      const wrapper = resolveChatWrapper(model)
      return new LoadedModel({ ...init, contextSize }, runtime, model, shared, wrapper)
    } catch (err) {
      await model.dispose()
      throw err
    }
  }

  get embeddingLength (): number {
    return this.model.embeddingVectorSize
  }

  /** requests generating now and waiting, over both contexts */
  slots (): { busy: number, total: number, queued: number } {
    return {
      busy: this.queue.busy + this.deterministicQueue.busy,
      total: this.queue.slots,
      queued: this.queue.queued + this.deterministicQueue.queued
    }
  }

  provenance (servedBy: string, deterministic: boolean): Provenance {
    return { model: this.id, modelSha256: this.sha256, backend: this.runtime.backend, servedBy, viaPeer: false, deterministic }
  }

  /**
   * Runs a chat request: checks it and builds its prompt first (a bad schema or an over-long
   * prompt is refused before it queues), then waits for a sequence and streams.
   */
  async * chat (request: ChatRequest, options: CallOptions & { servedBy: string, observer: GenerationObserver }): AsyncGenerator<ChatEvent> {
    this.assertUsable()
    const accepted = performance.now()
    const { history, mode } = chatPrompt(request)
    const grammar = await this.grammarFor(mode)
    const state = this.wrapper.generateContextState({ chatHistory: history })
    const prompt = state.contextText.tokenize(this.model.tokenizer)
    const stops = this.templateStops(state.stopGenerationTriggers)
    const stopStrings = [...(request.stop ?? []), ...stops.strings]
    const stopTokens = stops.tokens
    // a JSON grammar allows whitespace after the value: a model that cannot stop would pad to maxTokens
    for (const trigger of grammar?.stopGenerationTriggers ?? []) {
      if (typeof trigger === 'string') stopStrings.push(trigger)
      else if (!Array.isArray(trigger) && (trigger as LlamaText).values.every((value) => typeof value === 'string')) stopStrings.push(trigger.toString())
    }
    const room = this.init.contextSize - prompt.length
    if (room < 1) throw new BkgError('llm_context_exceeded', 400, `the prompt is ${prompt.length} tokens; ${this.id} runs with a context of ${this.init.contextSize}`)
    const deterministic = request.seed != null
    const queue = deterministic ? this.deterministicQueue : this.queue
    const controller = new AbortController()
    const onAbort = (): void => { controller.abort() }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    const release = await queue.acquire(options.principal ?? 'anonymous', options.signal)
    this.running.add(controller)
    let sequence: LlamaContextSequence | undefined
    try {
      sequence = deterministic ? await this.deterministicSequence() : this.takeSequence(prompt)
      const queuedMs = performance.now() - accepted
      yield { type: 'start', provenance: this.provenance(options.servedBy, deterministic) }
      const stream = generate({
        sequence,
        model: this.model,
        prompt,
        sampling: request,
        maxTokens: Math.min(request.maxTokens ?? room, room),
        stopStrings,
        stopTokens,
        grammar,
        reusePrefix: !deterministic,
        signal: controller.signal
      })
      const started = performance.now()
      let firstTokenMs = -1
      const step = async (): ReturnType<typeof stream.next> => await stream.next().catch((err: unknown) => {
        // a model unloaded under a paused reader: its native state is gone
        throw this.disposed ? this.unloadedError() : err
      })
      let next = await step()
      while (next.done !== true) {
        if (firstTokenMs < 0) {
          firstTokenMs = performance.now() - accepted
          options.observer.firstToken(firstTokenMs)
        }
        // streamed text of a tools request would be the raw call envelope: its meaning comes at the end
        if (mode.kind !== 'tools') yield { type: 'text', text: next.value.text, tokens: next.value.tokens }
        next = await step()
      }
      const end = next.value
      options.observer.finished(end.completionTokens, performance.now() - started)
      let text = grammar?.trimWhitespaceSuffix === true ? end.text.trimEnd() : end.text
      let toolCalls: ChatResult['toolCalls'] = []
      let finishReason = end.finishReason
      if (mode.kind === 'tools') {
        const read = readToolOutput(text)
        if (read != null) {
          text = read.content
          toolCalls = read.toolCalls
          if (toolCalls.length > 0) finishReason = 'tool_calls'
          if (text.length > 0) yield { type: 'text', text, tokens: end.completionTokens }
        } else if (text.length > 0) {
          yield { type: 'text', text, tokens: end.completionTokens }
        }
      }
      const result: ChatResult = {
        ...this.provenance(options.servedBy, deterministic),
        id: `chatcmpl-${randomBytes(12).toString('hex')}`,
        text,
        toolCalls,
        finishReason,
        usage: { promptTokens: prompt.length, completionTokens: end.completionTokens, totalTokens: prompt.length + end.completionTokens },
        timings: { queuedMs, firstTokenMs: Math.max(0, firstTokenMs), totalMs: performance.now() - accepted },
        failedPeers: []
      }
      yield { type: 'done', result }
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
      this.running.delete(controller)
      if (this.running.size === 0) this.onIdle?.()
      if (!deterministic && sequence != null) this.free.push(sequence)
      release()
    }
  }

  /**
   * The chat template's end-of-turn markers as a special token or as text; the same for every
   * request of a template, so tokenized once.
   */
  private templateStops (triggers: readonly LlamaText[]): { strings: string[], tokens: ReadonlySet<Token> } {
    const key = JSON.stringify(triggers.map((trigger) => trigger.toJSON()))
    let known = this.stopsByTemplate.get(key)
    if (known == null) {
      const strings: string[] = []
      const tokens = new Set<Token>()
      for (const trigger of triggers) {
        const tokenized = trigger.tokenize(this.model.tokenizer, 'trimLeadingSpace')
        if (tokenized.length === 1 && this.model.isSpecialToken(tokenized[0])) tokens.add(tokenized[0])
        else if (trigger.values.every((value) => typeof value === 'string')) strings.push(trigger.toString())
      }
      known = { strings, tokens }
      this.stopsByTemplate.set(key, known)
    }
    return known
  }

  /** The free sequence holding the longest prefix of this prompt (llama-server's prompt cache, by slot). */
  private takeSequence (prompt: Token[]): LlamaContextSequence {
    let best = 0
    let bestCommon = -1
    for (let index = 0; index < this.free.length; index++) {
      const held = this.free[index].contextTokens
      let common = 0
      while (common < held.length && common < prompt.length && held[common] === prompt[common]) common++
      if (common > bestCommon) {
        best = index
        bestCommon = common
      }
    }
    return this.free.splice(best, 1)[0]
  }

  private async deterministicSequence (): Promise<LlamaContextSequence> {
    this.deterministic ??= (async () => {
      const context = await this.model.createContext({
        contextSize: this.init.contextSize,
        sequences: 1,
        // the same thread count on every node and in every load situation
        threads: { ideal: this.init.threads, min: this.init.threads }
      })
      return context.getSequence()
    })()
    return await this.deterministic
  }

  private async grammarFor (mode: OutputMode): Promise<LlamaGrammar | null> {
    if (mode.kind === 'text') return null
    const schema = mode.kind === 'json' ? mode.schema : mode.schema
    const key = JSON.stringify(schema)
    let grammar = this.grammars.get(key)
    if (grammar == null) {
      const llama = await this.runtime.llama()
      grammar = schema == null ? llama.getGrammarFor('json') : llama.createGrammarForJsonSchema(schema as never)
      this.grammars.set(key, grammar)
      if (this.grammars.size > GRAMMAR_CACHE_SIZE) this.grammars.delete(this.grammars.keys().next().value!)
    }
    try {
      return await grammar
    } catch (err) {
      this.grammars.delete(key)
      throw new BkgError('llm_schema_unsupported', 400, `the JSON schema cannot be turned into a grammar: ${(err as Error).message}`)
    }
  }

  async embed (input: string[], options: CallOptions & { servedBy: string }): Promise<EmbedResult> {
    this.assertUsable()
    const tokenized = input.map((text) => this.model.tokenize(text))
    const longest = Math.max(0, ...tokenized.map((tokens) => tokens.length))
    if (longest >= this.init.contextSize) throw new BkgError('llm_context_exceeded', 400, `an input is ${longest} tokens; ${this.id} embeds at most ${this.init.contextSize - 1}`)
    const release = await this.embedQueue.acquire(options.principal ?? 'anonymous', options.signal)
    try {
      this.embedding ??= this.model.createEmbeddingContext({ contextSize: this.init.contextSize, threads: this.init.threads })
      const context = await this.embedding
      const embeddings: number[][] = []
      for (const tokens of tokenized) {
        options.signal?.throwIfAborted()
        embeddings.push([...(await context.getEmbeddingFor(tokens)).vector])
      }
      const promptTokens = tokenized.reduce((sum, tokens) => sum + tokens.length, 0)
      return { ...this.provenance(options.servedBy, true), dimensions: this.model.embeddingVectorSize, embeddings, usage: { promptTokens, totalTokens: promptTokens } }
    } finally {
      release()
    }
  }

  tokenize (text: string): number[] {
    this.assertUsable()
    return this.model.tokenize(text)
  }

  detokenize (tokens: number[]): string {
    this.assertUsable()
    for (const token of tokens) {
      if (!Number.isInteger(token) || token < 0 || token >= this.init.vocabularySize) throw new BkgError('invalid_request', 400, `${token} is not a token id of ${this.id} (0 to ${this.init.vocabularySize - 1})`)
    }
    return this.model.detokenize(tokens as Token[])
  }

  private assertUsable (): void {
    if (this.disposed) throw this.unloadedError()
  }

  private unloadedError (): BkgError {
    return new BkgError('llm_model_unloaded', 409, `${this.id} was unloaded`)
  }

  /**
   * Ends running requests (each finishes as cancelled at its next token), refuses the queued ones,
   * then frees native memory: at once when the running ones have ended, or after a grace period
   * (a reader that stopped reading holds its request; its next read fails as unloaded).
   */
  async dispose (): Promise<void> {
    if (this.disposed) return
    this.disposed = true
    this.queue.failAll(this.unloadedError())
    this.deterministicQueue.failAll(this.unloadedError())
    this.embedQueue.failAll(this.unloadedError())
    if (this.running.size > 0) {
      const ended = new Promise<void>((resolve) => { this.onIdle = resolve })
      for (const controller of this.running) controller.abort()
      let timer: NodeJS.Timeout | undefined
      await Promise.race([ended, new Promise<void>((resolve) => { timer = setTimeout(resolve, UNLOAD_GRACE_MS) })])
      clearTimeout(timer)
    }
    await this.model.dispose()
  }
}
