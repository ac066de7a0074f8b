import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { ModelIdSchema } from '../../../protocols/infer.ts'
import type { LlmApi } from '../../llm/index.ts'
import type { ApiKeys } from '../auth.ts'
import { CHAT_BODY_LIMIT, chatFields, chatRequestOf, MAX_EMBED_INPUTS, MAX_TOKENS_IN, ModelField, Placement } from '../openai/request.ts'
import { runChat, SERVED_BY_HEADER, streamChat } from '../openai/chat-stream.ts'
import { installRetryAfter } from '../openai/errors.ts'
import { bkgSse, ChatResultOut, chatResultOut, EmbedResultOut, embedResultOut } from './llm-shapes.ts'
import { llmSocketRoute } from './llm-ws.ts'

const ChatBody = z.object({ ...chatFields, placement: Placement.optional(), stream: z.boolean().optional() }).strict()

const EmbedBody = z.object({
  model: ModelField.optional(),
  input: z.union([z.string().max(CHAT_BODY_LIMIT), z.array(z.string().max(CHAT_BODY_LIMIT)).min(1).max(MAX_EMBED_INPUTS)]),
  placement: Placement.optional()
}).strict()

const Slots = z.object({ busy: z.number(), total: z.number(), queued: z.number() })
const ModelInfo = z.object({
  id: z.string(),
  name: z.string(),
  version: z.string(),
  file: z.string(),
  sha256: z.string(),
  size: z.number(),
  publisher: z.object({ peerId: z.string(), name: z.string() }),
  gguf: z.object({
    version: z.number(),
    architecture: z.string(),
    name: z.string().nullable(),
    contextLength: z.number().nullable(),
    embeddingLength: z.number().nullable(),
    blockCount: z.number().nullable(),
    vocabularySize: z.number().nullable(),
    tensorCount: z.number(),
    fileType: z.number().nullable()
  }).nullable(),
  loaded: z.boolean(),
  default: z.boolean(),
  slots: Slots.nullable()
})
const MeshModel = z.object({ id: z.string(), sha256: z.string(), peerId: z.string(), slots: Slots, latencyMs: z.number().nullable(), seenAt: z.string() })

/**
 * `/api/v1/llm/*`: chat (JSON, SSE, WebSocket), embeddings, tokenizing; and
 * `/api/v1/admin/llm/*`: the held GGUF models, loading, unloading, the default model
 * (docs/api.md, "Inference").
 */
export const llmRoutes: FastifyPluginAsyncZod<{ llm: LlmApi, keys: ApiKeys }> = async (app, { llm, keys }) => {
  const tags = ['llm']
  installRetryAfter(app)

  app.post('/api/v1/llm/chat', {
    config: { access: 'token' },
    bodyLimit: CHAT_BODY_LIMIT,
    schema: {
      summary: 'Chat with a model here or on a peer: one JSON result, or Server-Sent Events with `stream: true` or `Accept: text/event-stream`',
      description: 'SSE events: `start` (provenance), `token` `{text, tokens}` per generated piece, then `done` (the result) or `error` `{error: {code, message}}`. A slow reader slows its own generation; a client that disconnects stops it.',
      tags,
      body: ChatBody,
      response: { 200: ChatResultOut }
    }
  }, async (request, reply) => {
    const { stream, ...body } = request.body
    const chat = chatRequestOf(body)
    if (stream === true || (stream !== false && (request.headers.accept ?? '').includes('text/event-stream'))) {
      return await streamChat(llm, request, reply, chat, bkgSse)
    }
    return chatResultOut(await runChat(llm, request, reply, chat))
  })

  llmSocketRoute(app, llm, keys)

  app.post('/api/v1/llm/embed', {
    config: { access: 'token' },
    bodyLimit: CHAT_BODY_LIMIT,
    schema: { summary: 'Embeddings of one text or several, here or on a peer', tags, body: EmbedBody, response: { 200: EmbedResultOut } }
  }, async (request, reply) => {
    const { model, input, placement } = request.body
    const result = await llm.embed({ model: model === '' ? undefined : model, input: typeof input === 'string' ? [input] : input, placement }, { principal: request.principal?.tokenId })
    reply.header(SERVED_BY_HEADER, result.servedBy)
    return embedResultOut(result)
  })

  app.post('/api/v1/llm/tokenize', {
    config: { access: 'token' },
    bodyLimit: CHAT_BODY_LIMIT,
    schema: {
      summary: 'The token ids of a text under a model loaded here',
      tags,
      body: z.object({ model: ModelField.optional(), text: z.string().max(CHAT_BODY_LIMIT) }).strict(),
      response: { 200: z.object({ model: z.string(), tokens: z.array(z.number()), served_by: z.string() }) }
    }
  }, async (request, reply) => {
    const { model, tokens, servedBy } = await llm.tokenize(request.body.model === '' ? undefined : request.body.model, request.body.text)
    reply.header(SERVED_BY_HEADER, servedBy)
    return { model, tokens, served_by: servedBy }
  })

  app.post('/api/v1/llm/detokenize', {
    config: { access: 'token' },
    bodyLimit: CHAT_BODY_LIMIT,
    schema: {
      summary: 'The text of token ids under a model loaded here',
      tags,
      body: z.object({ model: ModelField.optional(), tokens: z.array(z.number().int().min(0).max(2 ** 31 - 1)).max(MAX_TOKENS_IN) }).strict(),
      response: { 200: z.object({ model: z.string(), text: z.string(), served_by: z.string() }) }
    }
  }, async (request, reply) => {
    const { model, text, servedBy } = await llm.detokenize(request.body.model === '' ? undefined : request.body.model, request.body.tokens)
    reply.header(SERVED_BY_HEADER, servedBy)
    return { model, text, served_by: servedBy }
  })

  app.get('/api/v1/admin/llm/models', {
    config: { access: 'admin' },
    schema: {
      summary: 'Held GGUF models (loaded or not, slots in use), the default, and the models peers announce',
      tags,
      response: { 200: z.object({ models: z.array(ModelInfo), default: z.string().nullable(), mesh: z.array(MeshModel) }) }
    }
  }, async () => ({ models: llm.models(), default: llm.defaultModel(), mesh: llm.meshModels() }))

  app.post('/api/v1/admin/llm/models/load', {
    config: { access: 'admin' },
    schema: {
      summary: 'Verify a held model package again and load its GGUF (`pull`: fetch it from the mesh first; `default`: make it the default)',
      tags,
      body: z.object({ model: ModelIdSchema, pull: z.boolean().optional(), default: z.boolean().optional() }).strict(),
      response: { 200: ModelInfo }
    }
  }, async (request, reply) => {
    const controller = new AbortController()
    const onClose = (): void => { if (!reply.raw.writableFinished) controller.abort() }
    reply.raw.once('close', onClose)
    try {
      const info = await llm.load(request.body.model, { pull: request.body.pull, signal: controller.signal })
      return request.body.default === true ? llm.setDefault(info.id) ?? info : info
    } finally {
      reply.raw.off('close', onClose)
    }
  })

  app.post('/api/v1/admin/llm/models/unload', {
    config: { access: 'admin' },
    schema: { summary: 'Unload a model (its running requests end as cancelled, queued ones are refused with 409)', tags, body: z.object({ model: ModelIdSchema }).strict(), response: { 200: ModelInfo } }
  }, async (request) => await llm.unload(request.body.model))

  app.put('/api/v1/admin/llm/default', {
    config: { access: 'admin' },
    schema: {
      summary: 'The model requests without `model` use (null: none)',
      tags,
      body: z.object({ model: ModelIdSchema.nullable() }).strict(),
      response: { 200: z.object({ default: z.string().nullable(), model: ModelInfo.nullable() }) }
    }
  }, async (request) => {
    const model = llm.setDefault(request.body.model)
    return { default: llm.defaultModel(), model }
  })
}
