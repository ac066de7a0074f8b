import { z } from 'zod'
import { BkgError } from '../lib/bkg-error.ts'
import { parseUntrustedJson } from './untrusted-json.ts'

/**
 * `/bkg/infer/1.0.0`: one chat or embedding request run on a peer's local model. Both ways the
 * stream carries uvarint-length-prefixed JSON frames.
 *
 * Client → server: first `chat` (with an initial `credit`) or `embed`; then, for a chat, `credit`
 * frames as its consumer takes text, and `cancel`. The client keeps its writing side open until it
 * has the answer: the server reads the end of that side (or a reset) as a cancel.
 *
 * Server → client: for a chat `start`, `text`…, `done`; for an embedding `embedded`; or `error`
 * at any point. The server never has more `text` frames in flight than the client granted (the
 * initial credit plus every `credit` frame, minus the text frames sent), and it stops pulling
 * tokens from its model while it has no credit, so a reader that stalls stalls the generation
 * instead of filling buffers.
 *
 * The request shapes are node/llm/types.ts's ChatRequest and EmbedRequest with `model` required
 * (the client resolved the default); a test checks that what parses here is assignable to them.
 * Requests are strict: a peer must not drop a field (a constraint, a sampling option) it does not
 * know and answer as if it had been honoured. Answers are parsed leniently (unknown fields
 * dropped), so a newer peer's extra fields do not break an older client.
 */

/** a request: messages, tools and their schemas */
export const MAX_CLIENT_FRAME_BYTES = 4 * 1024 * 1024
/** an answer: a done frame holds the whole text, an embedded frame every vector */
export const MAX_SERVER_FRAME_BYTES = 16 * 1024 * 1024
/** text frames a client grants at the start unless it says otherwise */
export const DEFAULT_CREDIT = 32
/** the most credit one frame may grant: bounds what a client must be ready to buffer */
export const MAX_CREDIT = 1024
export const MAX_MESSAGES = 4096
export const MAX_TOOLS = 128
export const MAX_STOP_STRINGS = 16
export const MAX_EMBED_INPUTS = 2048
export const MAX_EMBED_DIMENSIONS = 65_536
/** one text frame's piece (a token or a few, as the backend streamed them) */
export const MAX_TEXT_PIECE_CHARS = 64 * 1024
export const MAX_FAILED_PEERS = 16

/** gossip on LLM_TOPIC: what a node has loaded and how busy it is */
export const MAX_ANNOUNCEMENT_BYTES = 8 * 1024
export const MAX_ANNOUNCED_MODELS = 64

/** `NAME@VERSION`: a model package name (protocols/model-package.ts) and its version */
export const ModelIdSchema = z.string().max(129).regex(/^[a-z0-9][a-z0-9._-]{0,63}@[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/, 'a model id is NAME@VERSION')
export const PeerIdString = z.string().min(10).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/, 'a base58 PeerId')
const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'sha256 as 64 lowercase hex digits')
const Count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const Millis = z.number().min(0).max(Number.MAX_SAFE_INTEGER)
const JsonObject = z.record(z.string().max(256), z.unknown())

const ToolCallSchema = z.object({
  id: z.string().min(1).max(128),
  name: z.string().min(1).max(256),
  arguments: z.string().max(1024 * 1024)
})

export const ChatMessageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string(),
  toolCalls: z.array(ToolCallSchema.strict()).max(MAX_TOOLS).optional(),
  toolCallId: z.string().max(128).optional()
}).strict()

const ToolDefinitionSchema = z.object({
  name: z.string().min(1).max(256),
  description: z.string().max(64 * 1024).optional(),
  parameters: JsonObject.optional()
}).strict()

const ResponseFormatSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }).strict(),
  z.object({ type: z.literal('json_object') }).strict(),
  z.object({ type: z.literal('json_schema'), schema: JsonObject, name: z.string().max(256).optional() }).strict()
])

const ToolChoiceSchema = z.union([z.enum(['auto', 'none', 'required']), z.object({ name: z.string().min(1).max(256) }).strict()])

const PlacementSchema = z.enum(['auto', 'local', 'peer'])

/** ChatRequest with its model resolved; unknown top-level fields dropped (what a client sends: see InferChatRequest) */
export const InferChatRequestFields = z.object({
  model: ModelIdSchema,
  messages: z.array(ChatMessageSchema).min(1).max(MAX_MESSAGES),
  responseFormat: ResponseFormatSchema.optional(),
  tools: z.array(ToolDefinitionSchema).max(MAX_TOOLS).optional(),
  toolChoice: ToolChoiceSchema.optional(),
  /** meaningless on the serving peer (it runs the request itself), kept so a request passes through unchanged */
  placement: PlacementSchema.optional(),
  maxTokens: z.number().int().min(1).max(1_048_576).optional(),
  temperature: z.number().min(0).max(100).optional(),
  topP: z.number().min(0).max(1).optional(),
  topK: z.number().int().min(0).max(1_000_000).optional(),
  minP: z.number().min(0).max(1).optional(),
  seed: z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).optional(),
  stop: z.array(z.string().min(1).max(256)).max(MAX_STOP_STRINGS).optional()
})
/** what a server accepts: nothing it does not know */
export const InferChatRequest = InferChatRequestFields.strict()
export type InferChatRequest = z.infer<typeof InferChatRequest>

/** EmbedRequest with its model resolved; unknown top-level fields dropped (what a client sends) */
export const InferEmbedRequestFields = z.object({
  model: ModelIdSchema,
  input: z.array(z.string()).min(1).max(MAX_EMBED_INPUTS),
  placement: PlacementSchema.optional()
})
export const InferEmbedRequest = InferEmbedRequestFields.strict()
export type InferEmbedRequest = z.infer<typeof InferEmbedRequest>

export const ClientFrame = z.discriminatedUnion('type', [
  z.object({ type: z.literal('chat'), request: InferChatRequest, credit: z.number().int().min(1).max(MAX_CREDIT) }).strict(),
  z.object({ type: z.literal('embed'), request: InferEmbedRequest }).strict(),
  z.object({ type: z.literal('credit'), n: z.number().int().min(1).max(MAX_CREDIT) }).strict(),
  z.object({ type: z.literal('cancel') }).strict()
])
export type ClientFrame = z.infer<typeof ClientFrame>

export const ProvenanceSchema = z.object({
  model: ModelIdSchema,
  modelSha256: Sha256Hex,
  backend: z.string().max(256),
  servedBy: PeerIdString,
  viaPeer: z.boolean(),
  deterministic: z.boolean()
})

const UsageSchema = z.object({ promptTokens: Count, completionTokens: Count, totalTokens: Count })

export const ChatResultSchema = ProvenanceSchema.extend({
  id: z.string().min(1).max(128),
  text: z.string(),
  toolCalls: z.array(ToolCallSchema).max(MAX_TOOLS),
  finishReason: z.enum(['stop', 'length', 'tool_calls', 'cancelled']),
  usage: UsageSchema,
  timings: z.object({ queuedMs: Millis, firstTokenMs: Millis, totalMs: Millis }),
  failedPeers: z.array(z.object({ peerId: z.string().max(128), error: z.string().max(1024) })).max(MAX_FAILED_PEERS)
})

export const EmbedResultSchema = ProvenanceSchema.extend({
  dimensions: z.number().int().min(1).max(MAX_EMBED_DIMENSIONS),
  embeddings: z.array(z.array(z.number()).max(MAX_EMBED_DIMENSIONS)).max(MAX_EMBED_INPUTS),
  usage: z.object({ promptTokens: Count, totalTokens: Count })
})

export const ServerFrame = z.discriminatedUnion('type', [
  z.object({ type: z.literal('start'), provenance: ProvenanceSchema }),
  z.object({ type: z.literal('text'), text: z.string().max(MAX_TEXT_PIECE_CHARS), tokens: z.number().int().min(0).max(MAX_TEXT_PIECE_CHARS) }),
  z.object({ type: z.literal('done'), result: ChatResultSchema }),
  z.object({ type: z.literal('embedded'), result: EmbedResultSchema }),
  z.object({
    type: z.literal('error'),
    code: z.string().min(1).max(64),
    /** the HTTP status the error has on the serving node: tells a client's mistake (4xx) from the peer's trouble */
    status: z.number().int().min(400).max(599),
    message: z.string().max(1024),
    /** with `llm_busy`: when the peer expects a free slot */
    retryAfterSeconds: z.number().int().min(0).max(86_400).optional()
  })
])
export type ServerFrame = z.infer<typeof ServerFrame>

/** One model in an announcement; `slots` per model when the node keeps them apart (sequences of one loaded model). */
export const AnnouncedModel = z.object({
  id: ModelIdSchema,
  sha256: Sha256Hex,
  slots: z.object({ busy: Count, total: Count, queued: Count }).strict().optional()
}).strict()

export const LlmAnnouncement = z.object({
  v: z.literal(1),
  peerId: PeerIdString,
  models: z.array(AnnouncedModel).max(MAX_ANNOUNCED_MODELS),
  /** over all of the node's loaded models */
  slots: z.object({ busy: Count, total: Count, queued: Count }).strict(),
  /** the sender's clock (ms since the epoch): orders one sender's announcements, never compared across nodes */
  at: Count
}).strict()
export type LlmAnnouncement = z.infer<typeof LlmAnnouncement>

export class InferFrameError extends BkgError {
  constructor (message: string) {
    super('invalid_infer_frame', 400, message)
  }
}

function decode<T> (schema: z.ZodType<T>, bytes: Uint8Array, maxBytes: number, what: string): T {
  const parsed = schema.safeParse(parseUntrustedJson(bytes, { maxBytes }))
  if (!parsed.success) throw new InferFrameError(`${what}: ${z.prettifyError(parsed.error).slice(0, 512)}`)
  return parsed.data
}

export function encodeFrame (frame: ClientFrame | ServerFrame | LlmAnnouncement): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(frame))
}

export function decodeClientFrame (bytes: Uint8Array): ClientFrame {
  return decode(ClientFrame, bytes, MAX_CLIENT_FRAME_BYTES, 'infer request frame')
}

export function decodeServerFrame (bytes: Uint8Array): ServerFrame {
  return decode(ServerFrame, bytes, MAX_SERVER_FRAME_BYTES, 'infer answer frame')
}

export function decodeAnnouncement (bytes: Uint8Array): LlmAnnouncement {
  return decode(LlmAnnouncement, bytes, MAX_ANNOUNCEMENT_BYTES, 'llm announcement')
}

/**
 * The announcement's bytes, within MAX_ANNOUNCEMENT_BYTES: models that do not fit (long names,
 * many loaded) are left out from the end and reported, so what goes out always validates.
 */
export function encodeAnnouncement (announcement: LlmAnnouncement): { bytes: Uint8Array, omitted: number } {
  const models = announcement.models.slice(0, MAX_ANNOUNCED_MODELS)
  for (;;) {
    const bytes = encodeFrame({ ...announcement, models })
    if (bytes.byteLength <= MAX_ANNOUNCEMENT_BYTES || models.length === 0) {
      return { bytes, omitted: announcement.models.length - models.length }
    }
    models.pop()
  }
}
