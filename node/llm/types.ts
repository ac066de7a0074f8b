/**
 * The contract of local inference: what a chat or embedding request holds, what streams back, and
 * the two backends (this node's node-llama-cpp, and a peer over `/bkg/infer/1.0.0`) that serve it.
 * The REST, OpenAI-compatible and MCP routes, the CLI and the peer protocol all speak these shapes.
 */

/** `NAME@VERSION` of a held `.bkg` package whose file is a GGUF */
export type ModelId = string

export interface ToolDefinition {
  name: string
  description?: string
  /** JSON schema of the arguments object */
  parameters?: Record<string, unknown>
}

export interface ToolCall {
  /** `call_` and 24 hex digits, unique per response */
  id: string
  name: string
  /** the arguments as JSON text, as OpenAI clients expect */
  arguments: string
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool'
  content: string
  /** an assistant turn that called tools */
  toolCalls?: ToolCall[]
  /** a tool turn: the call it answers */
  toolCallId?: string
}

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema', schema: Record<string, unknown>, name?: string }

export type ToolChoice = 'auto' | 'none' | 'required' | { name: string }

/** Where a request may run: here first and a peer when needed, only here, or only on a peer. */
export type Placement = 'auto' | 'local' | 'peer'

export interface SamplingOptions {
  maxTokens?: number
  /** 0 = greedy */
  temperature?: number
  topP?: number
  topK?: number
  minP?: number
  /**
   * With a seed the request is deterministic: it runs alone in a context of its own (never batched
   * with other sequences, no prompt cache), so the same model bytes and request give the same text.
   */
  seed?: number
  /** generation ends before any of these strings; the string itself is not returned */
  stop?: string[]
}

export interface ChatRequest extends SamplingOptions {
  /** the node's default model when absent */
  model?: ModelId
  messages: ChatMessage[]
  responseFormat?: ResponseFormat
  tools?: ToolDefinition[]
  toolChoice?: ToolChoice
  placement?: Placement
}

export interface EmbedRequest {
  model?: ModelId
  input: string[]
  placement?: Placement
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'cancelled'

/** Who answered: named in every response (the `served_by` field and `x-bkg-served-by` header). */
export interface Provenance {
  model: ModelId
  /** sha256 (hex) of the GGUF file as its signed manifest states it */
  modelSha256: string
  /** 'node-llama-cpp@3.21.1 (cpu)' and the like */
  backend: string
  /** PeerId of the node whose backend ran the request */
  servedBy: string
  /** the request went to a peer (fallback) rather than running here */
  viaPeer: boolean
  deterministic: boolean
}

export interface Usage {
  promptTokens: number
  completionTokens: number
  totalTokens: number
}

export interface ChatResult extends Provenance {
  id: string
  text: string
  toolCalls: ToolCall[]
  finishReason: FinishReason
  usage: Usage
  timings: {
    /** waiting for a free sequence */
    queuedMs: number
    /** request accepted to first generated token */
    firstTokenMs: number
    totalMs: number
  }
  /** peers tried and failed before the one that served, in order */
  failedPeers: Array<{ peerId: string, error: string }>
}

/**
 * What a chat streams, in order: one `start` (a sequence was given and the prompt is being read),
 * `text` pieces as tokens are generated, then one `done`. The stream is pull-based: generation
 * waits while the consumer does not ask for the next event, so a slow client slows only its own
 * request; returning from (breaking out of) the iteration cancels generation.
 */
export type ChatEvent =
  | { type: 'start', provenance: Provenance }
  | { type: 'text', text: string, tokens: number }
  | { type: 'done', result: ChatResult }

export interface EmbedResult extends Provenance {
  dimensions: number
  embeddings: number[][]
  usage: { promptTokens: number, totalTokens: number }
}

export interface CallOptions {
  signal?: AbortSignal
  /** whose request it is, for fair queueing (a token id, or a peer's id) */
  principal?: string
}

/** A backend runs one request; the service chooses which. */
export interface InferenceBackend {
  chat: (request: ChatRequest & { model: ModelId }, options: CallOptions) => AsyncIterable<ChatEvent>
  embed: (request: EmbedRequest & { model: ModelId }, options: CallOptions) => Promise<EmbedResult>
}

export interface GgufFacts {
  version: number
  architecture: string
  name: string | null
  contextLength: number | null
  embeddingLength: number | null
  blockCount: number | null
  vocabularySize: number | null
  tensorCount: number
  fileType: number | null
}

/** A held model whose package has a GGUF file (`/api/v1/admin/llm/models`). */
export interface LlmModelInfo {
  id: ModelId
  name: string
  version: string
  /** the GGUF's path inside the package */
  file: string
  sha256: string
  size: number
  publisher: { peerId: string, name: string }
  gguf: GgufFacts | null
  loaded: boolean
  default: boolean
  /** sequences that run requests at once, in use and in all (when loaded) */
  slots: { busy: number, total: number, queued: number } | null
}

/** A model a peer announced it serves (gossip on `bkg/llm/1`). */
export interface MeshModel {
  id: ModelId
  sha256: string
  peerId: string
  slots: { busy: number, total: number, queued: number }
  /** measured round trip to that peer, when known */
  latencyMs: number | null
  seenAt: string
}

/** What the API, MCP and the CLI use. */
export interface LlmApi {
  chat: (request: ChatRequest, options: CallOptions) => AsyncIterable<ChatEvent>
  embed: (request: EmbedRequest, options: CallOptions) => Promise<EmbedResult>
  /** under a model loaded here (`servedBy` is this node) */
  tokenize: (model: ModelId | undefined, text: string) => Promise<{ model: ModelId, tokens: number[], servedBy: string }>
  detokenize: (model: ModelId | undefined, tokens: number[]) => Promise<{ model: ModelId, text: string, servedBy: string }>
  /** held GGUF models */
  models: () => LlmModelInfo[]
  /** models this node can answer for: loaded here, or announced by a peer */
  servable: () => Array<{ id: ModelId, local: boolean, peers: string[] }>
  meshModels: () => MeshModel[]
  /** verifies the package again (signature, publisher not revoked, file hashes), checks the GGUF header, loads it; `pull` fetches it first when not held */
  load: (id: ModelId, options?: { pull?: boolean, signal?: AbortSignal }) => Promise<LlmModelInfo>
  unload: (id: ModelId) => Promise<LlmModelInfo>
  setDefault: (id: ModelId | null) => LlmModelInfo | null
  defaultModel: () => ModelId | null
}
