import { z } from 'zod'
import type { ChatEvent, ChatResult, EmbedResult, Provenance, ToolCall } from '../../llm/index.ts'
import type { SseFormat } from '../openai/chat-stream.ts'

/**
 * BKG's own JSON for inference results (`/api/v1/llm/*`, its SSE and WebSocket frames): the
 * service's shapes in snake_case, tool calls as OpenAI writes them, so one client parses both.
 */

export const ProvenanceOut = z.object({
  model: z.string(),
  model_sha256: z.string(),
  backend: z.string(),
  served_by: z.string(),
  via_peer: z.boolean(),
  deterministic: z.boolean()
})

const ToolCallOut = z.object({ id: z.string(), type: z.literal('function'), function: z.object({ name: z.string(), arguments: z.string() }) })

export const ChatResultOut = ProvenanceOut.extend({
  id: z.string(),
  text: z.string(),
  tool_calls: z.array(ToolCallOut),
  finish_reason: z.enum(['stop', 'length', 'tool_calls', 'cancelled']),
  usage: z.object({ prompt_tokens: z.number(), completion_tokens: z.number(), total_tokens: z.number() }),
  timings: z.object({ queued_ms: z.number(), first_token_ms: z.number(), total_ms: z.number() }),
  failed_peers: z.array(z.object({ peer_id: z.string(), error: z.string() }))
})

export const EmbedResultOut = ProvenanceOut.extend({
  dimensions: z.number(),
  embeddings: z.array(z.array(z.number())),
  usage: z.object({ prompt_tokens: z.number(), total_tokens: z.number() })
})

export function provenanceOut (p: Provenance): z.infer<typeof ProvenanceOut> {
  return { model: p.model, model_sha256: p.modelSha256, backend: p.backend, served_by: p.servedBy, via_peer: p.viaPeer, deterministic: p.deterministic }
}

export function toolCallOut (call: ToolCall): z.infer<typeof ToolCallOut> {
  return { id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } }
}

export function chatResultOut (result: ChatResult): z.infer<typeof ChatResultOut> {
  return {
    id: result.id,
    text: result.text,
    tool_calls: result.toolCalls.map(toolCallOut),
    finish_reason: result.finishReason,
    usage: { prompt_tokens: result.usage.promptTokens, completion_tokens: result.usage.completionTokens, total_tokens: result.usage.totalTokens },
    ...provenanceOut(result),
    timings: { queued_ms: result.timings.queuedMs, first_token_ms: result.timings.firstTokenMs, total_ms: result.timings.totalMs },
    failed_peers: result.failedPeers.map((failed) => ({ peer_id: failed.peerId, error: failed.error }))
  }
}

export function embedResultOut (result: EmbedResult): z.infer<typeof EmbedResultOut> {
  return {
    ...provenanceOut(result),
    dimensions: result.dimensions,
    embeddings: result.embeddings,
    usage: { prompt_tokens: result.usage.promptTokens, total_tokens: result.usage.totalTokens }
  }
}

/** A chat event as a frame's fields: `start` (who serves), `token` (text), `done` (the result). */
export function chatEventOut (event: ChatEvent): { type: 'start' | 'token' | 'done', data: Record<string, unknown> } {
  if (event.type === 'start') return { type: 'start', data: provenanceOut(event.provenance) }
  if (event.type === 'text') return { type: 'token', data: { text: event.text, tokens: event.tokens } }
  return { type: 'done', data: chatResultOut(event.result) }
}

export const bkgSse: SseFormat = {
  event: (event) => {
    const { type, data } = chatEventOut(event)
    return `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`
  },
  error: (error) => `event: error\ndata: ${JSON.stringify({ error })}\n\n`
}
