import { z } from 'zod'
import { BkgError } from '../../../lib/bkg-error.ts'
import { LLM_LIMITS, type ChatMessage, type ChatRequest, type ResponseFormat, type ToolChoice, type ToolDefinition } from '../../llm/index.ts'

/**
 * Chat request bodies in OpenAI's shape (messages, tools, response_format, snake_case sampling),
 * which `/api/v1/llm/chat`, its WebSocket and `/v1/chat/completions` all take, and their mapping
 * to the service's ChatRequest.
 */

/** a chat body may carry a long conversation; the untrusted-JSON parser bounds its depth */
export const CHAT_BODY_LIMIT = 8 * 1024 * 1024
export const { MAX_MESSAGES, MAX_TEXT, MAX_TOOLS, MAX_STOP, MAX_EMBED_INPUTS, MAX_TOKENS_IN } = LLM_LIMITS

/** text parts of a content array; other part types are refused when mapped (no images here) */
const ContentPart = z.looseObject({ type: z.string().max(64), text: z.string().max(MAX_TEXT).optional() })
export const Content = z.union([z.string().max(MAX_TEXT), z.array(ContentPart).max(MAX_MESSAGES)])

const ToolCallIn = z.looseObject({
  id: z.string().max(256),
  type: z.literal('function').optional(),
  function: z.looseObject({ name: z.string().max(256), arguments: z.string().max(MAX_TEXT) })
})

export const Message = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: Content.nullable().optional(),
  tool_calls: z.array(ToolCallIn).max(MAX_TOOLS).optional(),
  tool_call_id: z.string().max(256).optional()
})
export type Message = z.infer<typeof Message>

const JsonSchema = z.record(z.string(), z.unknown())

export const ResponseFormatIn = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('text') }),
  z.looseObject({ type: z.literal('json_object') }),
  z.looseObject({
    type: z.literal('json_schema'),
    json_schema: z.looseObject({ name: z.string().max(256).optional(), schema: JsonSchema })
  })
])

export const Tool = z.looseObject({
  type: z.literal('function'),
  function: z.looseObject({
    name: z.string().min(1).max(256),
    description: z.string().max(MAX_TEXT).optional(),
    parameters: JsonSchema.optional()
  })
})

export const ToolChoiceIn = z.union([
  z.enum(['auto', 'none', 'required']),
  z.looseObject({ type: z.literal('function'), function: z.looseObject({ name: z.string().max(256) }) })
])

export const Placement = z.enum(['auto', 'local', 'peer'])

/** `NAME@VERSION`; absent, empty or `default` means the node's default model */
export const ModelField = z.string().max(256)

/** sampling and the rest of a chat request, the same in every API that runs chats */
export const chatFields = {
  model: ModelField.optional(),
  messages: z.array(Message).min(1).max(MAX_MESSAGES),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().min(0).max(1).optional(),
  top_k: z.number().int().min(0).max(100_000).optional(),
  min_p: z.number().min(0).max(1).optional(),
  seed: z.number().int().min(0).max(2 ** 32 - 1).optional(),
  stop: z.union([z.string().min(1).max(1024), z.array(z.string().min(1).max(1024)).max(MAX_STOP)]).nullable().optional(),
  max_tokens: z.number().int().min(1).max(MAX_TOKENS_IN).nullable().optional(),
  response_format: ResponseFormatIn.optional(),
  tools: z.array(Tool).max(MAX_TOOLS).optional(),
  tool_choice: ToolChoiceIn.optional()
}

export interface ChatFields {
  model?: string
  messages: Message[]
  temperature?: number
  top_p?: number
  top_k?: number
  min_p?: number
  seed?: number
  stop?: string | string[] | null
  max_tokens?: number | null
  response_format?: z.infer<typeof ResponseFormatIn>
  tools?: Array<z.infer<typeof Tool>>
  tool_choice?: z.infer<typeof ToolChoiceIn>
  placement?: z.infer<typeof Placement>
}

function invalid (message: string): BkgError {
  return new BkgError('invalid_request', 400, message)
}

export function modelOf (model: string | undefined): string | undefined {
  return model == null || model === '' || model === 'default' ? undefined : model
}

/** The text of a message's content: a string, or its text parts joined. */
export function textOf (content: z.infer<typeof Content> | null | undefined, where: string): string {
  if (content == null) return ''
  if (typeof content === 'string') return content
  return content.map((part, index) => {
    // `input_text` and `output_text` are the Responses API's names for the same thing
    if (!['text', 'input_text', 'output_text'].includes(part.type) || typeof part.text !== 'string') {
      throw invalid(`${where}.content[${index}]: only text parts are supported, not "${part.type}"`)
    }
    return part.text
  }).join('')
}

export function messageOf (message: Message, index: number): ChatMessage {
  const where = `body.messages[${index}]`
  const content = textOf(message.content, where)
  if (message.role === 'tool') {
    if (message.tool_call_id == null) throw invalid(`${where}.tool_call_id: required for a tool message`)
    return { role: 'tool', content, toolCallId: message.tool_call_id }
  }
  if (message.role === 'assistant' && message.tool_calls != null && message.tool_calls.length > 0) {
    return { role: 'assistant', content, toolCalls: message.tool_calls.map((call) => ({ id: call.id, name: call.function.name, arguments: call.function.arguments })) }
  }
  // OpenAI's newer name for the system turn
  return { role: message.role === 'developer' ? 'system' : message.role, content }
}

export function responseFormatOf (format: z.infer<typeof ResponseFormatIn> | undefined): ResponseFormat | undefined {
  if (format == null) return undefined
  if (format.type === 'json_schema') return { type: 'json_schema', schema: format.json_schema.schema, name: format.json_schema.name }
  return { type: format.type }
}

export function toolsOf (tools: Array<z.infer<typeof Tool>> | undefined): ToolDefinition[] | undefined {
  if (tools == null || tools.length === 0) return undefined
  const names = new Set<string>()
  return tools.map((tool) => {
    if (names.has(tool.function.name)) throw invalid(`body.tools: the function name "${tool.function.name}" is given twice`)
    names.add(tool.function.name)
    return { name: tool.function.name, description: tool.function.description, parameters: tool.function.parameters }
  })
}

export function toolChoiceOf (choice: z.infer<typeof ToolChoiceIn> | undefined, tools: ToolDefinition[] | undefined): ToolChoice | undefined {
  if (choice == null) return undefined
  if (typeof choice === 'string') {
    if (choice === 'required' && tools == null) throw invalid('body.tool_choice: "required" needs tools')
    return choice
  }
  if (tools?.some((tool) => tool.name === choice.function.name) !== true) throw invalid(`body.tool_choice: no tool named "${choice.function.name}" in body.tools`)
  return { name: choice.function.name }
}

/** The service's request for a chat body in OpenAI's shape. */
export function chatRequestOf (body: ChatFields): ChatRequest {
  const tools = toolsOf(body.tools)
  const stop = body.stop == null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop
  const request: ChatRequest = {
    model: modelOf(body.model),
    messages: body.messages.map(messageOf),
    maxTokens: body.max_tokens ?? undefined,
    temperature: body.temperature,
    topP: body.top_p,
    topK: body.top_k,
    minP: body.min_p,
    seed: body.seed,
    stop: stop != null && stop.length > 0 ? stop : undefined,
    responseFormat: responseFormatOf(body.response_format),
    tools,
    toolChoice: toolChoiceOf(body.tool_choice, tools),
    placement: body.placement
  }
  // absent fields stay absent: the service (and a peer it forwards to) tells "not given" from a value
  for (const key of Object.keys(request) as Array<keyof ChatRequest>) if (request[key] === undefined) delete request[key]
  return request
}

/** with tools the model's turn may be a call, whose JSON is no text for the client: sent whole at the end */
export function holdsTextBack (request: ChatRequest): boolean {
  return request.tools != null && request.toolChoice !== 'none'
}
