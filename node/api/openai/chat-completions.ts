import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { ChatRequest, ChatResult, FinishReason, Usage } from '../../llm/index.ts'
import type { SseFormat } from './chat-stream.ts'
import { openAiErrorType } from './errors.ts'
import { chatFields, chatRequestOf, holdsTextBack, MAX_TOKENS_IN, Placement } from './request.ts'

/**
 * `/v1/chat/completions` in OpenAI's shapes: `chat.completion`, and for streams
 * `chat.completion.chunk` objects ending in `data: [DONE]`. Fields OpenAI's clients send that
 * change nothing here (user, store, metadata, …) are ignored; those whose meaning would be lost
 * (several choices, log probabilities, penalties) are refused.
 */

/** clients send `null` for "not set" as often as they leave a field out (top-level nulls are dropped before validation) */
const orNull = <T extends z.ZodType>(schema: T): z.ZodOptional<z.ZodNullable<T>> => schema.nullable().optional()

export const ChatCompletionBody = z.looseObject({
  ...chatFields,
  max_completion_tokens: z.number().int().min(1).max(MAX_TOKENS_IN).optional(),
  stream: z.boolean().optional(),
  stream_options: z.looseObject({ include_usage: orNull(z.boolean()) }).optional(),
  n: z.number().int().optional(),
  logprobs: z.boolean().optional(),
  top_logprobs: z.number().int().optional(),
  frequency_penalty: z.number().optional(),
  presence_penalty: z.number().optional(),
  logit_bias: z.record(z.string(), z.number()).optional(),
  /** BKG: where the request may run */
  placement: Placement.optional()
})
export type ChatCompletionBody = z.infer<typeof ChatCompletionBody>

function unsupported (message: string): BkgError {
  return new BkgError('unsupported_parameter', 400, message)
}

/** The service's request for a chat completion body; refuses what would change the answer's meaning. */
export function completionRequestOf (body: ChatCompletionBody): ChatRequest {
  if (body.n != null && body.n !== 1) throw unsupported('n: only one choice per request is supported (n = 1)')
  if (body.logprobs === true || (body.top_logprobs ?? 0) > 0) throw unsupported('logprobs: log probabilities are not supported')
  if ((body.frequency_penalty ?? 0) !== 0 || (body.presence_penalty ?? 0) !== 0) throw unsupported('frequency_penalty, presence_penalty: penalties are not supported (leave them 0)')
  if (body.logit_bias != null && Object.keys(body.logit_bias).length > 0) throw unsupported('logit_bias: not supported')
  return chatRequestOf({ ...body, max_tokens: body.max_completion_tokens ?? body.max_tokens })
}

export function newId (prefix: string): string {
  return `${prefix}${randomBytes(12).toString('hex')}`
}

export function unixNow (): number {
  return Math.floor(Date.now() / 1000)
}

export function finishReasonOut (reason: FinishReason): 'stop' | 'length' | 'tool_calls' {
  // a cancelled chat's client went away: whatever reads it sees a stop
  return reason === 'cancelled' ? 'stop' : reason
}

export function usageOut (usage: Usage): { prompt_tokens: number, completion_tokens: number, total_tokens: number } {
  return { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens, total_tokens: usage.totalTokens }
}

/** what `seed` reproducibility depends on: the backend and the model's bytes */
function fingerprintOf (result: Pick<ChatResult, 'backend' | 'modelSha256'>): string {
  return `${result.backend} ${result.modelSha256.slice(0, 16)}`
}

function toolCallsOut (result: ChatResult): Array<{ id: string, type: 'function', function: { name: string, arguments: string } }> {
  return result.toolCalls.map((call) => ({ id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } }))
}

/** A `chat.completion` object, with `served_by` naming the node that ran it. */
export function completionOut (result: ChatResult): Record<string, unknown> {
  const toolCalls = toolCallsOut(result)
  return {
    id: newId('chatcmpl-'),
    object: 'chat.completion',
    created: unixNow(),
    model: result.model,
    system_fingerprint: fingerprintOf(result),
    choices: [{
      index: 0,
      message: {
        role: 'assistant',
        content: toolCalls.length > 0 && result.text === '' ? null : result.text,
        refusal: null,
        ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {})
      },
      logprobs: null,
      finish_reason: finishReasonOut(result.finishReason)
    }],
    usage: usageOut(result.usage),
    served_by: result.servedBy
  }
}

/**
 * The SSE chunks of one streamed completion: a first chunk with the role, one per text piece,
 * tool calls (whole, in one delta) and the finish reason at the end, with
 * `stream_options.include_usage` a last chunk with usage and no choices, then `[DONE]`. With
 * tools, text is held back to the end: the model's turn may turn out to be a call.
 */
export function completionSse (request: ChatRequest, includeUsage: boolean): SseFormat {
  const id = newId('chatcmpl-')
  const created = unixNow()
  const holdText = holdsTextBack(request)
  let model = request.model ?? ''
  let servedBy = ''
  let fingerprint: string | null = null
  let started = false
  const chunk = (choices: unknown[], usage?: unknown): string => `data: ${JSON.stringify({
    id,
    object: 'chat.completion.chunk',
    created,
    model,
    system_fingerprint: fingerprint,
    choices,
    ...(includeUsage ? { usage: usage ?? null } : {}),
    served_by: servedBy
  })}\n\n`
  const delta = (content: Record<string, unknown>, finishReason: string | null = null): Record<string, unknown> =>
    ({ index: 0, delta: content, logprobs: null, finish_reason: finishReason })
  const opening = (): string => {
    started = true
    return chunk([delta({ role: 'assistant', content: '', refusal: null })])
  }
  return {
    event: (event) => {
      if (event.type === 'start') {
        ({ model, servedBy } = { model: event.provenance.model, servedBy: event.provenance.servedBy })
        fingerprint = fingerprintOf(event.provenance)
        return opening()
      }
      if (event.type === 'text') return holdText || event.text === '' ? '' : chunk([delta({ content: event.text })])
      const result = event.result
      ;({ model, servedBy } = { model: result.model, servedBy: result.servedBy })
      fingerprint = fingerprintOf(result)
      let text = started ? '' : opening()
      const toolCalls = toolCallsOut(result)
      if (toolCalls.length > 0) text += chunk([delta({ tool_calls: toolCalls.map((call, index) => ({ index, ...call })) })])
      else if (holdText && result.text !== '') text += chunk([delta({ content: result.text })])
      text += chunk([delta({}, finishReasonOut(result.finishReason))])
      if (includeUsage) text += chunk([], usageOut(result.usage))
      return text
    },
    error: (error) => `data: ${JSON.stringify({ error: { message: error.message, type: openAiErrorType(statusOfCode(error.code)), param: null, code: error.code } })}\n\n`,
    end: 'data: [DONE]\n\n'
  }
}

/** a mid-stream failure has no status line; its type comes from what its code usually answers */
export function statusOfCode (code: string): number {
  if (code === 'llm_busy' || code === 'rate_limited') return 429
  if (code.endsWith('not_found')) return 404
  if (code === 'cancelled') return 499
  return 500
}
