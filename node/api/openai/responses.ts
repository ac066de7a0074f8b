import { z } from 'zod'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { ChatMessage, ChatRequest, ChatResult, ResponseFormat } from '../../llm/index.ts'
import { newId, statusOfCode, unixNow } from './chat-completions.ts'
import type { SseFormat } from './chat-stream.ts'
import { openAiErrorType } from './errors.ts'
import { Content, MAX_MESSAGES, MAX_TOKENS_IN, ModelField, modelOf, Placement, textOf } from './request.ts'

/**
 * `/v1/responses`, text only: input as a string or messages, `instructions`, `text.format`
 * (json_schema); the answer is one `message` output item with one `output_text` part. Streams
 * send the events OpenAI's SDK accumulates (created, in_progress, output item and content part
 * added, text deltas, the done events, completed).
 */

const InputItem = z.looseObject({
  type: z.string().max(64).optional(),
  role: z.enum(['system', 'developer', 'user', 'assistant']).optional(),
  content: Content.optional()
})

const TextFormat = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('text') }),
  z.looseObject({ type: z.literal('json_object') }),
  z.looseObject({ type: z.literal('json_schema'), name: z.string().max(256).optional(), schema: z.record(z.string(), z.unknown()) })
])

export const ResponsesBody = z.looseObject({
  model: ModelField.optional(),
  input: z.union([z.string().max(8 * 1024 * 1024), z.array(InputItem).min(1).max(MAX_MESSAGES)]),
  instructions: z.string().max(8 * 1024 * 1024).optional(),
  max_output_tokens: z.number().int().min(1).max(MAX_TOKENS_IN).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().min(0).max(1).optional(),
  text: z.looseObject({ format: TextFormat.optional() }).optional(),
  tools: z.array(z.unknown()).optional(),
  previous_response_id: z.string().optional(),
  stream: z.boolean().optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  /** BKG: sampling the Responses API lacks */
  seed: z.number().int().min(0).max(2 ** 32 - 1).optional(),
  top_k: z.number().int().min(0).max(100_000).optional(),
  placement: Placement.optional()
})
export type ResponsesBody = z.infer<typeof ResponsesBody>

function unsupported (message: string): BkgError {
  return new BkgError('unsupported_parameter', 400, message)
}

function messagesOf (body: ResponsesBody): ChatMessage[] {
  const messages: ChatMessage[] = body.instructions != null ? [{ role: 'system', content: body.instructions }] : []
  if (typeof body.input === 'string') return [...messages, { role: 'user', content: body.input }]
  body.input.forEach((item, index) => {
    const where = `body.input[${index}]`
    if ((item.type != null && item.type !== 'message') || item.role == null) {
      throw unsupported(`${where}: only messages (role and text content) are supported, not ${item.type != null ? `"${item.type}" items` : 'items without a role'}`)
    }
    messages.push({ role: item.role === 'developer' ? 'system' : item.role, content: textOf(item.content, where) })
  })
  return messages
}

function formatOf (body: ResponsesBody): ResponseFormat | undefined {
  const format = body.text?.format
  if (format == null) return undefined
  if (format.type === 'json_schema') return { type: 'json_schema', schema: format.schema, name: format.name }
  return { type: format.type }
}

export function responsesRequestOf (body: ResponsesBody): ChatRequest {
  if (body.tools != null && body.tools.length > 0) throw unsupported('tools: /v1/responses runs text only here; use /v1/chat/completions for tools')
  if (body.previous_response_id != null) throw unsupported('previous_response_id: responses are not stored; send the conversation in input')
  const request: ChatRequest = {
    model: modelOf(body.model),
    messages: messagesOf(body),
    maxTokens: body.max_output_tokens,
    temperature: body.temperature,
    topP: body.top_p,
    topK: body.top_k,
    seed: body.seed,
    responseFormat: formatOf(body),
    placement: body.placement
  }
  for (const key of Object.keys(request) as Array<keyof ChatRequest>) if (request[key] === undefined) delete request[key]
  return request
}

interface Ids { response: string, message: string, createdAt: number }

function newIds (): Ids {
  return { response: newId('resp_'), message: newId('msg_'), createdAt: unixNow() }
}

function messageItem (ids: Ids, text: string, status: 'in_progress' | 'completed' | 'incomplete'): Record<string, unknown> {
  return {
    id: ids.message,
    type: 'message',
    status,
    role: 'assistant',
    content: status === 'in_progress' ? [] : [{ type: 'output_text', text, annotations: [], logprobs: [] }]
  }
}

/** A `response` object: in progress (no output yet), or finished with the result's text. */
function responseObject (body: ResponsesBody, ids: Ids, model: string, servedBy: string, result: ChatResult | null): Record<string, unknown> {
  const incomplete = result?.finishReason === 'length'
  return {
    id: ids.response,
    object: 'response',
    created_at: ids.createdAt,
    status: result == null ? 'in_progress' : incomplete ? 'incomplete' : 'completed',
    ...(result != null ? { completed_at: unixNow() } : {}),
    error: null,
    incomplete_details: incomplete ? { reason: 'max_output_tokens' } : null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model,
    output: result == null ? [] : [messageItem(ids, result.text, incomplete ? 'incomplete' : 'completed')],
    parallel_tool_calls: false,
    previous_response_id: null,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    tool_choice: 'none',
    tools: [],
    text: { format: body.text?.format ?? { type: 'text' } },
    truncation: 'disabled',
    metadata: body.metadata ?? {},
    usage: result == null
      ? null
      : {
          input_tokens: result.usage.promptTokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: result.usage.completionTokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: result.usage.totalTokens
        },
    served_by: servedBy
  }
}

export function responseOut (body: ResponsesBody, result: ChatResult): Record<string, unknown> {
  return responseObject(body, newIds(), result.model, result.servedBy, result)
}

/** The SSE events of one streamed response, numbered by `sequence_number`. */
export function responseSse (body: ResponsesBody, request: ChatRequest): SseFormat {
  const ids = newIds()
  let sequence = 0
  let model = request.model ?? ''
  let servedBy = ''
  let started = false
  let text = ''
  const at = { item_id: ids.message, output_index: 0, content_index: 0 }
  const frame = (type: string, data: Record<string, unknown>): string =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`
  const opening = (): string => {
    started = true
    const response = responseObject(body, ids, model, servedBy, null)
    return frame('response.created', { response }) +
      frame('response.in_progress', { response }) +
      frame('response.output_item.added', { output_index: 0, item: messageItem(ids, '', 'in_progress') }) +
      frame('response.content_part.added', { ...at, part: { type: 'output_text', text: '', annotations: [] } })
  }
  return {
    event: (event) => {
      if (event.type === 'start') {
        model = event.provenance.model
        servedBy = event.provenance.servedBy
        return opening()
      }
      if (event.type === 'text') {
        if (event.text === '') return ''
        text += event.text
        return frame('response.output_text.delta', { ...at, delta: event.text, logprobs: [] })
      }
      const result = event.result
      model = result.model
      servedBy = result.servedBy
      let out = started ? '' : opening()
      // the result's text is the truth (a stop string cut off the stream's tail)
      const final = responseObject(body, ids, model, servedBy, result)
      if (result.text !== text && result.text.startsWith(text)) out += frame('response.output_text.delta', { ...at, delta: result.text.slice(text.length), logprobs: [] })
      out += frame('response.output_text.done', { ...at, text: result.text, logprobs: [] })
      out += frame('response.content_part.done', { ...at, part: { type: 'output_text', text: result.text, annotations: [] } })
      out += frame('response.output_item.done', { output_index: 0, item: (final.output as unknown[])[0] })
      out += frame(final.status === 'incomplete' ? 'response.incomplete' : 'response.completed', { response: final })
      return out
    },
    // `error` too: OpenAI's SDK throws an APIError for a stream event carrying one
    error: (error) => frame('error', { code: error.code, message: error.message, param: null, error: { message: error.message, type: openAiErrorType(statusOfCode(error.code)), code: error.code } })
  }
}
