import { z } from 'zod'
import { BkgError } from '../../lib/bkg-error.ts'
import { LLM_LIMITS, type ChatEvent, type ChatRequest, type ChatResult, type EmbedResult, type LlmModelInfo } from '../llm/index.ts'
import { RunProgress } from './progress.ts'
import type { McpServices } from './services.ts'
import { defineTool, type ToolDefinition } from './tool-kit.ts'

const Model = z.string().max(256).describe('NAME@VERSION of a GGUF model package (llm_models lists them); absent, empty or "default": the node\'s default model')
const Placement = z.enum(['auto', 'local', 'peer']).describe('auto (default): here, or a peer that serves the model when this node lacks it or is busy; local: only here; peer: only on a peer')

const ChatInput = z.strictObject({
  model: Model.optional(),
  messages: z.array(z.strictObject({
    role: z.enum(['system', 'user', 'assistant']),
    content: z.string().max(LLM_LIMITS.MAX_TEXT)
  })).min(1).max(LLM_LIMITS.MAX_MESSAGES).optional().describe('the conversation so far, oldest first (give this or prompt)'),
  prompt: z.string().max(LLM_LIMITS.MAX_TEXT).optional().describe('shortcut for messages: [{role: "user", content: prompt}]'),
  max_tokens: z.number().int().min(1).max(LLM_LIMITS.MAX_TOKENS_IN).optional().describe('most tokens to generate'),
  temperature: z.number().min(0).max(2).optional().describe('0 = greedy'),
  top_p: z.number().min(0).max(1).optional(),
  top_k: z.number().int().min(0).max(100_000).optional(),
  seed: z.number().int().min(0).max(2 ** 32 - 1).optional().describe('with a seed the answer is deterministic: the same text for the same model and request on every node'),
  stop: z.union([z.string().min(1).max(1024), z.array(z.string().min(1).max(1024)).max(LLM_LIMITS.MAX_STOP)]).optional().describe('generation ends before any of these strings'),
  json_schema: z.record(z.string(), z.unknown()).optional().describe('a JSON Schema the answer must match: the output is constrained to JSON of this shape'),
  placement: Placement.optional()
}).refine((args) => (args.messages == null) !== (args.prompt == null), { message: 'give messages or prompt (exactly one)' })

const Provenance = {
  served_by: z.string().describe('PeerId of the node that ran the request'),
  via_peer: z.boolean().describe('a peer served it rather than this node'),
  model: z.string(),
  model_sha256: z.string().describe('sha256 of the GGUF file, as its signed package states it'),
  backend: z.string()
}

const ChatOutput = z.object({
  text: z.string(),
  finish_reason: z.enum(['stop', 'length', 'tool_calls', 'cancelled']),
  usage: z.object({ prompt_tokens: z.number(), completion_tokens: z.number(), total_tokens: z.number() }),
  ...Provenance,
  deterministic: z.boolean()
})

const EmbedInput = z.strictObject({
  model: Model.optional(),
  input: z.union([z.string().max(LLM_LIMITS.MAX_TEXT), z.array(z.string().max(LLM_LIMITS.MAX_TEXT)).min(1).max(LLM_LIMITS.MAX_EMBED_INPUTS)]).describe('a text, or several'),
  placement: Placement.optional()
})

const EmbedOutput = z.object({
  ...Provenance,
  dimensions: z.number(),
  embeddings: z.array(z.array(z.number())).describe('one vector per input text, in order')
})

const Slots = z.object({ busy: z.number(), total: z.number(), queued: z.number() })
const ModelsOutput = z.object({
  default: z.string().nullable().describe('the model a call without `model` uses'),
  servable: z.array(z.object({ id: z.string(), local: z.boolean(), peers: z.array(z.string()) })).describe('what llm_chat and llm_embed can use: loaded here (local) or announced by these peers'),
  held: z.array(z.object({
    id: z.string(),
    sha256: z.string(),
    size: z.number(),
    publisher: z.string(),
    architecture: z.string().nullable(),
    contextLength: z.number().nullable(),
    embeddingLength: z.number().nullable(),
    loaded: z.boolean(),
    default: z.boolean(),
    slots: Slots.nullable()
  })).describe('GGUF model packages this node holds, verified (loaded or not)'),
  mesh: z.array(z.object({ id: z.string(), peerId: z.string(), slots: Slots, latencyMs: z.number().nullable(), seenAt: z.string() })).describe('what each peer announces it serves, with its load')
})

function modelOf (model: string | undefined): string | undefined {
  return model == null || model === '' || model === 'default' ? undefined : model
}

function chatRequestOf (args: z.output<typeof ChatInput>): ChatRequest {
  const request: ChatRequest = {
    model: modelOf(args.model),
    messages: args.messages ?? [{ role: 'user', content: args.prompt ?? '' }],
    maxTokens: args.max_tokens,
    temperature: args.temperature,
    topP: args.top_p,
    topK: args.top_k,
    seed: args.seed,
    stop: typeof args.stop === 'string' ? [args.stop] : args.stop != null && args.stop.length > 0 ? args.stop : undefined,
    responseFormat: args.json_schema != null ? { type: 'json_schema', schema: args.json_schema } : undefined,
    placement: args.placement
  }
  // absent stays absent: the service (and a peer it forwards to) tells "not given" from a value
  for (const key of Object.keys(request) as Array<keyof ChatRequest>) if (request[key] === undefined) delete request[key]
  return request
}

function provenanceOut (result: ChatResult | EmbedResult): z.infer<z.ZodObject<typeof Provenance>> {
  return { served_by: result.servedBy, via_peer: result.viaPeer, model: result.model, model_sha256: result.modelSha256, backend: result.backend }
}

function chatOut (result: ChatResult): z.infer<typeof ChatOutput> {
  return {
    text: result.text,
    finish_reason: result.finishReason,
    usage: { prompt_tokens: result.usage.promptTokens, completion_tokens: result.usage.completionTokens, total_tokens: result.usage.totalTokens },
    ...provenanceOut(result),
    deterministic: result.deterministic
  }
}

function heldOut (model: LlmModelInfo): z.infer<typeof ModelsOutput>['held'][number] {
  return {
    id: model.id,
    sha256: model.sha256,
    size: model.size,
    publisher: model.publisher.name,
    architecture: model.gguf?.architecture ?? null,
    contextLength: model.gguf?.contextLength ?? null,
    embeddingLength: model.gguf?.embeddingLength ?? null,
    loaded: model.loaded,
    default: model.default,
    slots: model.slots
  }
}

const cancelled = (): BkgError => new BkgError('cancelled', 499, 'the call was cancelled')

/** Inference: chat and embeddings here or on a peer (as /api/v1/llm/*), and what can serve them. */
export function llmTools (llm: NonNullable<McpServices['llm']>): ToolDefinition[] {
  return [
    defineTool({
      name: 'llm_chat',
      title: 'Chat with a language model',
      description: 'Generates a model\'s answer to a conversation (messages, or a single prompt), on this node or on a peer that serves the model, and returns the text with finish_reason, token usage and who served it (served_by, model_sha256, backend). ' +
        'With seed the text is the same on every node. json_schema constrains the answer to JSON of that schema. ' +
        'Sends the text as it is generated in progress notifications (when the call has a progressToken); cancelling the call stops generation.',
      input: ChatInput,
      output: ChatOutput,
      // the answer itself for clients that read only text; the rest is in structuredContent
      text: (out) => String(out.text),
      // a peer may serve it
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: false, openWorldHint: true },
      run: async (args, { caller, ctx }) => {
        const signal = ctx.mcpReq.signal
        const progress = new RunProgress(ctx)
        const events = llm.chat(chatRequestOf(args), { signal, principal: caller.principal.tokenId })[Symbol.asyncIterator]()
        try {
          while (true) {
            let next: IteratorResult<ChatEvent>
            try {
              next = await events.next()
            } catch (err) {
              // whatever the service threw on the abort, nobody is waiting for the answer
              if (signal.aborted) throw cancelled()
              throw err
            }
            if (next.done === true) throw new BkgError('internal', 500, 'the chat ended without a result')
            const event = next.value
            if (event.type === 'done') {
              await progress.finish()
              return chatOut(event.result)
            }
            if (event.type === 'text') progress.output({ stream: 'stdout', data: Buffer.from(event.text, 'utf8') })
            if (signal.aborted) throw cancelled()
          }
        } finally {
          progress.stop()
          // also after `done`: the generator may hold a sequence until it is closed
          await events.return?.().catch(() => {})
        }
      }
    }),
    defineTool({
      name: 'llm_embed',
      title: 'Embed text',
      description: 'Embedding vectors of one text or several, from a model here or on a peer that serves it: {model, dimensions, embeddings, served_by}.',
      input: EmbedInput,
      output: EmbedOutput,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: true },
      run: async (args, { caller, ctx }) => {
        const result = await llm.embed({
          input: typeof args.input === 'string' ? [args.input] : args.input,
          ...(modelOf(args.model) != null ? { model: modelOf(args.model) } : {}),
          ...(args.placement != null ? { placement: args.placement } : {})
        }, { signal: ctx.mcpReq.signal, principal: caller.principal.tokenId })
        return { ...provenanceOut(result), dimensions: result.dimensions, embeddings: result.embeddings }
      }
    }),
    defineTool({
      name: 'llm_models',
      title: 'Language models',
      description: 'The models llm_chat and llm_embed can use (loaded here, or announced by peers), the node\'s default, the GGUF packages held here (loaded or not, slots in use) and what each peer serves.',
      input: z.strictObject({}),
      output: ModelsOutput,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
      run: async () => ({
        default: llm.defaultModel(),
        servable: llm.servable(),
        held: llm.models().map(heldOut),
        mesh: llm.meshModels().map(({ id, peerId, slots, latencyMs, seenAt }) => ({ id, peerId, slots, latencyMs, seenAt }))
      })
    })
  ]
}
