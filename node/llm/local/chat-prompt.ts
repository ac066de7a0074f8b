import { randomBytes } from 'node:crypto'
import type { ChatHistoryItem } from 'node-llama-cpp'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { ChatMessage, ChatRequest, ToolCall, ToolDefinition } from '../types.ts'

/**
 * How the output of a request is shaped: free text, JSON (a schema or any object), or a tool-call
 * envelope. Tools work the way llama.cpp's generic handler does for models without a native
 * tool-call format: the tools are described in a system turn and the output is constrained by a
 * grammar to either `{"tool_calls":[{"name","arguments"}]}` or `{"content":"…"}`, so even a model
 * that never learnt a call syntax produces a call that parses and matches the tool's schema.
 */
export type OutputMode =
  | { kind: 'text' }
  | { kind: 'json', schema: Record<string, unknown> | null }
  | { kind: 'tools', schema: Record<string, unknown>, tools: ToolDefinition[] }

export interface ChatPrompt {
  history: ChatHistoryItem[]
  mode: OutputMode
}

const ANY_OBJECT = { type: 'object', properties: {}, additionalProperties: true }

export function chatPrompt (request: ChatRequest): ChatPrompt {
  const mode = outputMode(request)
  const history: ChatHistoryItem[] = []
  if (mode.kind === 'tools') history.push({ type: 'system', text: toolInstructions(mode.tools, request.toolChoice) })
  for (const message of request.messages) history.push(historyItem(message))
  // an empty model turn: the wrapper renders the prompt up to where the assistant's answer starts
  history.push({ type: 'model', response: [] })
  return { history, mode }
}

function outputMode (request: ChatRequest): OutputMode {
  const tools = request.tools ?? []
  const choice = request.toolChoice ?? 'auto'
  if (tools.length > 0 && choice !== 'none') {
    const offered = typeof choice === 'object' ? tools.filter((tool) => tool.name === choice.name) : tools
    if (offered.length === 0) throw new BkgError('invalid_request', 400, `tool_choice names ${(choice as { name: string }).name}, which is not among the tools`)
    if (request.responseFormat != null && request.responseFormat.type !== 'text') {
      throw new BkgError('invalid_request', 400, 'a request takes tools or a JSON response_format, not both')
    }
    const call = (tool: ToolDefinition): Record<string, unknown> => ({
      type: 'object',
      properties: { name: { const: tool.name }, arguments: tool.parameters ?? ANY_OBJECT },
      required: ['name', 'arguments']
    })
    const calls = { type: 'object', properties: { tool_calls: { type: 'array', items: offered.length === 1 ? call(offered[0]) : { oneOf: offered.map(call) }, minItems: 1 } }, required: ['tool_calls'] }
    const answer = { type: 'object', properties: { content: { type: 'string' } }, required: ['content'] }
    return { kind: 'tools', tools: offered, schema: choice === 'auto' ? { oneOf: [calls, answer] } : calls }
  }
  const format = request.responseFormat
  if (format?.type === 'json_schema') return { kind: 'json', schema: format.schema }
  if (format?.type === 'json_object') return { kind: 'json', schema: null }
  return { kind: 'text' }
}

function historyItem (message: ChatMessage): ChatHistoryItem {
  switch (message.role) {
    case 'system': return { type: 'system', text: message.content }
    case 'user': return { type: 'user', text: message.content }
    case 'assistant':
      return {
        type: 'model',
        response: [message.toolCalls != null && message.toolCalls.length > 0
          ? JSON.stringify({ tool_calls: message.toolCalls.map((call) => ({ name: call.name, arguments: parseArguments(call.arguments) })) })
          : message.content]
      }
    case 'tool': return { type: 'user', text: `Result of tool call ${message.toolCallId ?? ''}:\n${message.content}` }
  }
}

function parseArguments (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

function toolInstructions (tools: ToolDefinition[], choice: ChatRequest['toolChoice']): string {
  const listed = tools.map((tool) => `- ${tool.name}: ${tool.description ?? ''}\n  arguments (JSON schema): ${JSON.stringify(tool.parameters ?? ANY_OBJECT)}`).join('\n')
  const how = choice === 'auto' || choice == null
    ? 'Answer with JSON: either {"tool_calls":[{"name":TOOL,"arguments":{...}}]} to call tools, or {"content":TEXT} to reply directly.'
    : 'Answer with JSON: {"tool_calls":[{"name":TOOL,"arguments":{...}}]}.'
  return `You can call these tools:\n${listed}\n${how}`
}

/** What a tools-mode output means: calls, a direct reply, or (cut off, unparsable) the raw text. */
export function readToolOutput (text: string): { toolCalls: ToolCall[], content: string } | null {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof parsed !== 'object' || parsed == null) return null
  const calls = (parsed as { tool_calls?: unknown }).tool_calls
  if (Array.isArray(calls)) {
    return {
      content: '',
      toolCalls: calls.map((call: { name: string, arguments: unknown }) => ({ id: `call_${randomBytes(12).toString('hex')}`, name: call.name, arguments: JSON.stringify(call.arguments) }))
    }
  }
  const content = (parsed as { content?: unknown }).content
  return typeof content === 'string' ? { toolCalls: [], content } : null
}
