import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { LlmApi } from '../../llm/index.ts'
import { ChatCompletionBody, completionOut, completionRequestOf, completionSse } from '../openai/chat-completions.ts'
import { runChat, SERVED_BY_HEADER, streamChat } from '../openai/chat-stream.ts'
import { installOpenAiErrorShape, installRetryAfter } from '../openai/errors.ts'
import { CHAT_BODY_LIMIT, MAX_EMBED_INPUTS, ModelField, modelOf, Placement } from '../openai/request.ts'
import { ResponsesBody, responseOut, responseSse, responsesRequestOf } from '../openai/responses.ts'

const EmbeddingsBody = z.looseObject({
  model: ModelField.optional(),
  input: z.union([
    z.string().max(CHAT_BODY_LIMIT),
    z.array(z.union([z.string().max(CHAT_BODY_LIMIT), z.number(), z.array(z.number())])).min(1).max(MAX_EMBED_INPUTS)
  ]),
  encoding_format: z.enum(['float', 'base64']).optional(),
  dimensions: z.number().int().min(1).optional(),
  placement: Placement.optional()
})

/** float32 little-endian, as OpenAI's `encoding_format: base64` (its SDK asks for it by default) */
function base64Of (vector: number[]): string {
  const bytes = Buffer.alloc(vector.length * 4)
  vector.forEach((value, index) => bytes.writeFloatLE(value, index * 4))
  return bytes.toString('base64')
}

/**
 * The OpenAI-compatible API under `/v1`: chat completions, responses, embeddings and models, so
 * OpenAI's own clients work unchanged with a BKG token as their API key. Errors come in OpenAI's
 * shape; a busy node answers 429 with Retry-After (docs/api.md, "Inference").
 */
export const openAiRoutes: FastifyPluginAsyncZod<{ llm: LlmApi }> = async (app, { llm }) => {
  const tags = ['openai']
  installRetryAfter(app)
  installOpenAiErrorShape(app)
  // OpenAI's clients send null for "not set"
  app.addHook('preValidation', async (request) => {
    const body = request.body as Record<string, unknown> | null
    if (body == null || typeof body !== 'object' || Array.isArray(body)) return
    for (const key of Object.keys(body)) if (body[key] === null) delete body[key]
  })

  app.post('/v1/chat/completions', {
    config: { access: 'token' },
    bodyLimit: CHAT_BODY_LIMIT,
    schema: { summary: 'OpenAI chat completions (stream and not), response_format json_schema, tools', tags, body: ChatCompletionBody }
  }, async (request, reply) => {
    const chat = completionRequestOf(request.body)
    if (request.body.stream === true) {
      return await streamChat(llm, request, reply, chat, completionSse(chat, request.body.stream_options?.include_usage === true))
    }
    return completionOut(await runChat(llm, request, reply, chat))
  })

  app.post('/v1/responses', {
    config: { access: 'token' },
    bodyLimit: CHAT_BODY_LIMIT,
    schema: { summary: 'OpenAI responses, text only (stream and not)', tags, body: ResponsesBody }
  }, async (request, reply) => {
    const chat = responsesRequestOf(request.body)
    if (request.body.stream === true) return await streamChat(llm, request, reply, chat, responseSse(request.body, chat))
    return responseOut(request.body, await runChat(llm, request, reply, chat))
  })

  app.post('/v1/embeddings', {
    config: { access: 'token' },
    bodyLimit: CHAT_BODY_LIMIT,
    schema: { summary: 'OpenAI embeddings (float or base64)', tags, body: EmbeddingsBody }
  }, async (request, reply) => {
    const { input, encoding_format: encoding, dimensions } = request.body
    const texts = typeof input === 'string' ? [input] : input
    if (texts.some((item) => typeof item !== 'string')) throw new BkgError('unsupported_parameter', 400, 'input: token arrays are not supported; send text')
    const result = await llm.embed({ model: modelOf(request.body.model), input: texts as string[], placement: request.body.placement }, { principal: request.principal?.tokenId })
    reply.header(SERVED_BY_HEADER, result.servedBy)
    if (dimensions != null && dimensions !== result.dimensions) {
      throw new BkgError('unsupported_parameter', 400, `dimensions: ${result.model} gives ${result.dimensions} dimensions and cannot shorten them`)
    }
    return {
      object: 'list',
      data: result.embeddings.map((vector, index) => ({ object: 'embedding', index, embedding: encoding === 'base64' ? base64Of(vector) : vector })),
      model: result.model,
      usage: { prompt_tokens: result.usage.promptTokens, total_tokens: result.usage.totalTokens },
      served_by: result.servedBy
    }
  })

  const modelObject = (entry: { id: string, local: boolean, peers: string[] }): Record<string, unknown> => {
    const held = llm.models().find((model) => model.id === entry.id)
    return { id: entry.id, object: 'model', created: 0, owned_by: held?.publisher.name ?? 'bkg-mesh', local: entry.local, peers: entry.peers }
  }

  app.get('/v1/models', {
    config: { access: 'token' },
    schema: { summary: 'Models this node can answer for (loaded here or announced by a peer), ids NAME@VERSION', tags }
  }, async () => ({ object: 'list', data: llm.servable().map(modelObject) }))

  app.get('/v1/models/:id', {
    config: { access: 'token' },
    schema: { summary: 'One servable model', tags, params: z.object({ id: z.string().max(256) }) }
  }, async (request) => {
    const entry = llm.servable().find((model) => model.id === request.params.id)
    if (entry == null) throw new BkgError('model_not_found', 404, `no model ${request.params.id} is loaded here or announced by a peer`)
    return modelObject(entry)
  })
}
