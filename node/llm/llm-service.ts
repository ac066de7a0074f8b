import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import semver from 'semver'
import { BkgError } from '../../lib/bkg-error.ts'
import { mightSucceedElsewhere } from './another-node.ts'
import { defaultThreads, LLM_DEFAULTS } from './constants.ts'
import { HeldModels, parseModelId, type ModelSource } from './held-models.ts'
import { LlmMetrics } from './llm-metrics.ts'
import { LlmBusyError } from './local/fair-queue.ts'
import { LlamaRuntime } from './local/llama-runtime.ts'
import { LoadedModel, type GenerationObserver } from './local/loaded-model.ts'
import { readAhead } from './local/read-ahead.ts'
import type { CallOptions, ChatEvent, ChatRequest, EmbedRequest, EmbedResult, InferenceBackend, LlmApi, LlmModelInfo, MeshModel, ModelId } from './types.ts'

/** tokens generated ahead of a consumer that is writing the previous ones (the bound of a stalled reader's waste) */
const READ_AHEAD_EVENTS = 16
/**
 * A model faster than one token per this many ms streams its tokens in pieces of several: one
 * write, one event and one client wake-up per piece instead of per token (a slower model's
 * tokens each go out at once; the first token never waits).
 */
const STREAM_INTERVAL_MS = 5

export interface LlmServiceInit {
  gpu: 'auto' | false
  threads: number
  parallel: number
  contextSize: number
  maxQueued: number
  autoLoad: boolean
  maxLoaded: number
  pullTimeoutMs: number
  /** loaded when the node starts (in the background: start does not wait for them) */
  load: ModelId[]
  defaultModel: ModelId | null
}

/**
 * The mesh side of inference (peers' announcements, the `/bkg/infer` server and the remote
 * backend), made by the composition root from the node's libp2p parts.
 */
export interface MeshInference {
  /** runs a request on the best peer that announces its model, retrying before the first token */
  backend: InferenceBackend
  /** peers announcing a model, and whether one of them has a free sequence */
  candidates: (model: ModelId) => { peers: number, free: number }
  models: () => MeshModel[]
  /** this node's loaded models or load changed: tell the mesh soon */
  changed: () => void
  start: () => Promise<void> | void
  stop: () => Promise<void> | void
}

export interface LlmServiceComponents {
  /** this node's PeerId, named as the server of what runs here */
  peerId: string
  models: ModelSource
  registry: Registry
  log: Logger
  /** built with the service's local backend: a request served for a peer never hops again */
  mesh?: (local: InferenceBackend, service: LlmService) => MeshInference
}

export function llmService (init: Partial<LlmServiceInit> = {}): (components: LlmServiceComponents) => LlmService {
  const given = Object.fromEntries(Object.entries(init).filter(([, value]) => value !== undefined))
  return (components) => new LlmService({ ...LLM_DEFAULTS, threads: defaultThreads(), load: [], defaultModel: null, ...given }, components)
}

/**
 * Local inference on held, verified GGUF models, with the mesh as fallback: a request runs here
 * when this node has the model (loading a held one on demand) and a free sequence; otherwise, or
 * when running here fails before it starts, it goes to the best peer that announces the model.
 */
export class LlmService implements LlmApi {
  readonly init: LlmServiceInit
  private readonly components: LlmServiceComponents
  private readonly held: HeldModels
  private readonly runtime: LlamaRuntime
  private readonly metrics: LlmMetrics
  /** in least-recently-used order: the first is unloaded when one more is needed */
  private readonly loaded = new Map<ModelId, LoadedModel>()
  private readonly loading = new Map<ModelId, Promise<LoadedModel>>()
  private defaultId: ModelId | null
  private mesh: MeshInference | null = null
  private stopped = false
  /** runs requests here only: what the `/bkg/infer` server uses for peers */
  readonly local: InferenceBackend

  constructor (init: LlmServiceInit, components: LlmServiceComponents) {
    this.init = init
    this.components = components
    this.defaultId = init.defaultModel
    this.held = new HeldModels(components.models, components.log)
    this.runtime = new LlamaRuntime({ gpu: init.gpu, maxThreads: init.threads })
    const byModel = (read: (model: LoadedModel) => number) => () => [...this.loaded.values()].map((model) => ({ model: model.id, value: read(model) }))
    this.metrics = new LlmMetrics(components.registry, { queued: byModel((model) => model.slots().queued), busy: byModel((model) => model.slots().busy) })
    this.local = {
      chat: (request, options) => this.chatHere(request, options),
      embed: async (request, options) => await this.embedHere(request, options)
    }
  }

  private readonly onModelsChanged = (): void => {
    this.held.readMissingFacts().catch((err: unknown) => this.components.log.warn({ err }, 'reading GGUF headers failed'))
  }

  async start (): Promise<void> {
    this.stopped = false
    this.mesh = this.components.mesh?.(this.local, this) ?? null
    this.components.models.on('added', this.onModelsChanged)
    await this.mesh?.start()
  }

  afterStart (): void {
    this.onModelsChanged()
    for (const id of this.init.load) {
      this.load(id).catch((err: unknown) => this.components.log.error({ err, model: id }, 'loading a model at start failed'))
    }
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.components.models.off('added', this.onModelsChanged)
    await this.mesh?.stop()
    await Promise.allSettled([...this.loading.values()])
    await Promise.all([...this.loaded.values()].map(async (model) => { await model.dispose() }))
    this.loaded.clear()
    await this.runtime.stop()
  }

  // ---- requests ----

  async * chat (request: ChatRequest, options: CallOptions): AsyncGenerator<ChatEvent> {
    const id = this.resolve(request.model)
    const placement = request.placement ?? 'auto'
    const routed = { ...request, model: id }
    if (placement === 'peer') {
      yield * this.viaPeer(routed, options, null)
      return
    }
    let local: LoadedModel
    try {
      local = await this.usable(id)
    } catch (err) {
      if (placement === 'local' || !this.peerCanTake(id, false)) throw err
      yield * this.viaPeer(routed, options, (err as BkgError).status === 404 ? 'missing' : 'failed')
      return
    }
    const queue = request.seed != null ? local.deterministicQueue : local.queue
    if (placement === 'auto' && queue.saturated && this.peerCanTake(id, true)) {
      yield * this.viaPeer(routed, options, 'saturated')
      return
    }
    const stream = this.runOn(local, routed, options)
    let first: IteratorResult<ChatEvent>
    try {
      first = await stream.next()
    } catch (err) {
      // nothing was sent yet: a peer may still answer
      if (placement === 'local' || !mightSucceedElsewhere(err) || !this.peerCanTake(id, false)) throw err
      yield * this.viaPeer(routed, options, err instanceof LlmBusyError ? 'saturated' : 'failed')
      return
    }
    if (first.done !== true) {
      yield first.value
      yield * stream
    }
  }

  private async * runOn (model: LoadedModel, request: ChatRequest & { model: ModelId }, options: CallOptions): AsyncGenerator<ChatEvent> {
    const observer: GenerationObserver = {
      firstToken: (ms) => this.metrics.firstToken.observe({ model: model.id, served: 'local' }, ms / 1000),
      finished: (tokens, ms) => {
        this.metrics.tokens.inc({ model: model.id }, tokens)
        if (tokens > 0 && ms > 0) this.metrics.tokensPerSecond.observe({ model: model.id }, tokens / (ms / 1000))
      }
    }
    let outcome = 'error'
    let started = false
    try {
      for await (const event of readAhead(model.chat(request, { ...options, servedBy: this.components.peerId, observer }), { depth: READ_AHEAD_EVENTS, merge: mergeText, intervalMs: STREAM_INTERVAL_MS })) {
        if (event.type === 'start') {
          // a sequence was taken: peers learn how busy this node is
          started = true
          this.mesh?.changed()
        }
        if (event.type === 'done') outcome = event.result.finishReason === 'cancelled' ? 'cancelled' : 'ok'
        yield event
      }
    } finally {
      if (outcome === 'error' && options.signal?.aborted === true) outcome = 'cancelled'
      this.metrics.requests.inc({ model: model.id, served: 'local', outcome })
      if (started) this.mesh?.changed()
    }
  }

  private async * viaPeer (request: ChatRequest & { model: ModelId }, options: CallOptions, reason: string | null): AsyncGenerator<ChatEvent> {
    if (this.mesh == null) throw new BkgError('llm_no_peer', 503, `no peer serves ${request.model}: this node does not take part in the mesh's inference`)
    if (reason != null) this.metrics.fallbacks.inc({ reason })
    const accepted = performance.now()
    let outcome = 'error'
    let first = true
    try {
      for await (const event of this.mesh.backend.chat(request, options)) {
        if (event.type === 'text' && first) {
          first = false
          this.metrics.firstToken.observe({ model: request.model, served: 'peer' }, (performance.now() - accepted) / 1000)
        }
        if (event.type === 'done') {
          outcome = event.result.finishReason === 'cancelled' ? 'cancelled' : 'ok'
          if (event.result.failedPeers.length > 0) this.metrics.fallbacks.inc({ reason: 'retry' }, event.result.failedPeers.length)
        }
        yield event
      }
    } finally {
      this.metrics.requests.inc({ model: request.model, served: 'peer', outcome })
    }
  }

  /** A chat run here only (for peers): never forwarded again. */
  private async * chatHere (request: ChatRequest & { model: ModelId }, options: CallOptions): AsyncGenerator<ChatEvent> {
    yield * this.runOn(await this.usable(request.model), request, options)
  }

  async embed (request: EmbedRequest, options: CallOptions): Promise<EmbedResult> {
    const id = this.resolve(request.model)
    const routed = { ...request, model: id }
    const placement = request.placement ?? 'auto'
    if (placement === 'peer') return await this.embedViaPeer(routed, options, null)
    try {
      return await this.embedHere(routed, options)
    } catch (err) {
      if (placement === 'local' || !mightSucceedElsewhere(err) || !this.peerCanTake(id, false)) throw err
      return await this.embedViaPeer(routed, options, err instanceof LlmBusyError ? 'saturated' : (err as BkgError).status === 404 ? 'missing' : 'failed')
    }
  }

  private async embedHere (request: EmbedRequest & { model: ModelId }, options: CallOptions): Promise<EmbedResult> {
    return await (await this.usable(request.model)).embed(request.input, { ...options, servedBy: this.components.peerId })
  }

  private async embedViaPeer (request: EmbedRequest & { model: ModelId }, options: CallOptions, reason: string | null): Promise<EmbedResult> {
    if (this.mesh == null) throw new BkgError('llm_no_peer', 503, `no peer serves ${request.model}`)
    if (reason != null) this.metrics.fallbacks.inc({ reason })
    return await this.mesh.backend.embed(request, options)
  }

  async tokenize (model: ModelId | undefined, text: string): Promise<{ model: ModelId, tokens: number[], servedBy: string }> {
    const loaded = await this.usable(this.resolve(model))
    return { model: loaded.id, tokens: loaded.tokenize(text), servedBy: this.components.peerId }
  }

  async detokenize (model: ModelId | undefined, tokens: number[]): Promise<{ model: ModelId, text: string, servedBy: string }> {
    const loaded = await this.usable(this.resolve(model))
    return { model: loaded.id, text: loaded.detokenize(tokens), servedBy: this.components.peerId }
  }

  private peerCanTake (id: ModelId, needsFreeSlot: boolean): boolean {
    const candidates = this.mesh?.candidates(id)
    if (candidates == null) return false
    return needsFreeSlot ? candidates.free > 0 : candidates.peers > 0
  }

  /**
   * The model a request names: NAME@VERSION as given; a bare NAME is its loaded version, else its
   * newest held one, else the newest a peer announces; no name is the default model (or the only
   * one loaded).
   */
  private resolve (model: string | undefined): ModelId {
    if (model == null || model === '') {
      if (this.defaultId != null) return this.defaultId
      if (this.loaded.size === 1) return [...this.loaded.keys()][0]
      throw new BkgError('llm_no_model', 400, 'name a model (NAME@VERSION): this node has no default model')
    }
    if (model.includes('@')) {
      parseModelId(model)
      return model
    }
    const newest = (ids: ModelId[]): ModelId | undefined => ids
      .filter((id) => id.slice(0, id.lastIndexOf('@')) === model)
      .sort((a, b) => semver.rcompare(a.slice(a.lastIndexOf('@') + 1), b.slice(b.lastIndexOf('@') + 1)))[0]
    const found = newest([...this.loaded.keys()]) ?? newest(this.held.list().map((held) => held.id)) ?? newest((this.mesh?.models() ?? []).map((entry) => entry.id))
    if (found == null) throw new BkgError('llm_model_not_found', 404, `no model named ${model} is held here or announced by a peer`)
    return found
  }

  /** The loaded model, loading a held one when allowed; 404 when this node cannot run it. */
  private async usable (id: ModelId): Promise<LoadedModel> {
    const loaded = this.loaded.get(id)
    if (loaded != null) {
      // most recently used goes last
      this.loaded.delete(id)
      this.loaded.set(id, loaded)
      return loaded
    }
    if (this.loading.has(id) || (this.init.autoLoad && this.held.find(id) != null)) return await this.loadModel(id)
    throw new BkgError('llm_model_not_found', 404, this.held.find(id) != null
      ? `${id} is held but not loaded (load it: bkg llm load ${id})`
      : `${id} is not held here${this.mesh != null ? ' and no peer announces it' : ''}`)
  }

  // ---- models ----

  async load (id: ModelId, options: { pull?: boolean, signal?: AbortSignal } = {}): Promise<LlmModelInfo> {
    parseModelId(id)
    if (this.held.find(id) == null && this.loaded.get(id) == null) {
      if (options.pull !== true) throw new BkgError('llm_model_not_found', 404, `${id} is not held here (pull it with the load's pull option, or bkg model pull)`)
      await this.held.pull(id, this.init.pullTimeoutMs, options.signal)
    }
    await this.loadModel(id)
    return this.info(id)
  }

  private async loadModel (id: ModelId): Promise<LoadedModel> {
    const present = this.loaded.get(id)
    if (present != null) return present
    let loading = this.loading.get(id)
    if (loading == null) {
      loading = this.loadVerified(id).finally(() => this.loading.delete(id))
      this.loading.set(id, loading)
    }
    return await loading
  }

  private async loadVerified (id: ModelId): Promise<LoadedModel> {
    if (this.stopped) throw new BkgError('node_stopping', 503, 'the node is stopping')
    const { held, facts } = await this.held.verified(id)
    await this.makeRoom()
    const started = performance.now()
    const model = await LoadedModel.load({
      id,
      sha256: held.file.sha256,
      path: held.path,
      parallel: this.init.parallel,
      contextSize: this.init.contextSize,
      threads: this.init.threads,
      maxQueued: this.init.maxQueued,
      vocabularySize: facts.vocabularySize ?? 0
    }, this.runtime).catch((err: unknown) => {
      throw new BkgError('llm_load_failed', 422, `${id} passed the checks but the loader refused it: ${(err as Error).message}`, { cause: err })
    })
    if (this.stopped) {
      await model.dispose()
      throw new BkgError('node_stopping', 503, 'the node is stopping')
    }
    this.loaded.set(id, model)
    this.defaultId ??= id
    this.components.log.info({ model: id, sha256: held.file.sha256, ms: Math.round(performance.now() - started), backend: this.runtime.backend }, 'model loaded')
    this.mesh?.changed()
    return model
  }

  /** Unloads the least recently used idle model when the limit is reached. */
  private async makeRoom (): Promise<void> {
    if (this.loaded.size < this.init.maxLoaded) return
    for (const model of this.loaded.values()) {
      const slots = model.slots()
      if (slots.busy === 0 && slots.queued === 0) {
        await this.unload(model.id)
        return
      }
    }
    throw new BkgError('llm_too_many_loaded', 409, `${this.loaded.size} models are loaded and all are busy (llm.maxLoaded is ${this.init.maxLoaded})`)
  }

  async unload (id: ModelId): Promise<LlmModelInfo> {
    parseModelId(id)
    const model = this.loaded.get(id)
    if (model == null) throw new BkgError('llm_model_not_loaded', 409, `${id} is not loaded`)
    this.loaded.delete(id)
    await model.dispose()
    this.components.log.info({ model: id }, 'model unloaded')
    this.mesh?.changed()
    return this.info(id)
  }

  setDefault (id: ModelId | null): LlmModelInfo | null {
    if (id == null) {
      this.defaultId = null
      return null
    }
    if (this.held.find(id) == null) throw new BkgError('llm_model_not_found', 404, `${id} is not held here`)
    this.defaultId = id
    return this.info(id)
  }

  defaultModel (): ModelId | null {
    return this.defaultId
  }

  models (): LlmModelInfo[] {
    return this.held.list().map((held) => this.info(held.id))
  }

  private info (id: ModelId): LlmModelInfo {
    const held = this.held.find(id)
    const loaded = this.loaded.get(id)
    if (held == null) throw new BkgError('llm_model_not_found', 404, `${id} is not held here`)
    const { manifest } = held.model
    return {
      id,
      name: manifest.name,
      version: manifest.version,
      file: held.file.path,
      sha256: held.file.sha256,
      size: held.file.size,
      publisher: { peerId: manifest.publisher.peerId, name: manifest.publisher.name },
      gguf: this.held.factsOf(held),
      loaded: loaded != null,
      default: this.defaultId === id,
      slots: loaded?.slots() ?? null
    }
  }

  servable (): Array<{ id: ModelId, local: boolean, peers: string[] }> {
    const entries = new Map<ModelId, { id: ModelId, local: boolean, peers: string[] }>()
    const here = [...this.loaded.keys(), ...(this.init.autoLoad ? this.held.list().map((held) => held.id) : [])]
    for (const id of here) entries.set(id, { id, local: true, peers: [] })
    for (const entry of this.mesh?.models() ?? []) {
      const known = entries.get(entry.id) ?? { id: entry.id, local: false, peers: [] }
      known.peers.push(entry.peerId)
      entries.set(entry.id, known)
    }
    return [...entries.values()]
  }

  meshModels (): MeshModel[] {
    return this.mesh?.models() ?? []
  }
}

/** text pieces generated while the consumer was writing go out as one piece */
const mergeText = {
  accepts: (event: ChatEvent): boolean => event.type === 'text',
  join: (first: ChatEvent, then: ChatEvent): ChatEvent => {
    const [a, b] = [first, then] as Array<Extract<ChatEvent, { type: 'text' }>>
    return { type: 'text', text: a.text + b.text, tokens: a.tokens + b.tokens }
  }
}
