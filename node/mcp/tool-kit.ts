import type { CallToolResult, McpServer, ServerContext, StandardSchemaWithJSON, ToolAnnotations } from '@modelcontextprotocol/server'
import type { Logger } from 'pino'
import { z } from 'zod'
import { BkgError } from '../../lib/bkg-error.ts'
import type { McpCaller } from './services.ts'

/** What a tool's handler gets besides its arguments. */
export interface ToolCall {
  caller: McpCaller
  /** the SDK's request context: `mcpReq.signal` (cancellation), `mcpReq.notify`, `mcpReq._meta.progressToken` */
  ctx: ServerContext
}

/**
 * One tool: zod input (and output) schemas, MCP annotations, and a handler that returns the
 * structured result (sent as `structuredContent` and as its JSON text) or throws a BkgError.
 */
export interface ToolDefinition<I extends z.ZodType = z.ZodType> {
  name: string
  title: string
  description: string
  input: I
  output?: z.ZodType
  annotations: ToolAnnotations
  run: (args: z.output<I>, call: ToolCall) => Promise<Record<string, unknown>>
  /** the text content block for clients that read only text (default: the result as JSON) */
  text?: (out: Record<string, unknown>) => string
}

export function defineTool<I extends z.ZodType> (tool: ToolDefinition<I>): ToolDefinition {
  return tool as unknown as ToolDefinition
}

/** The JSON error body every tool error carries, in the API's shape (`{"error":{"code","message"}}`). */
export function toolError (code: string, message: string): CallToolResult {
  return { content: [{ type: 'text', text: JSON.stringify({ error: { code, message } }) }], isError: true }
}

/**
 * What a tool's schema shows clients, without the SDK's own validation: the SDK would answer bad
 * arguments with a bare message, and BKG's tool errors carry a code (`invalid_input`), so the
 * handler validates with zod itself. The JSON Schema is computed once per process, not once per
 * `tools/list` (a fresh server is built for every HTTP request). Output schemas are shown in
 * zod's input form, which allows additional properties: clients validate structuredContent
 * against them, and a newer service may add a field.
 */
function advertised (schema: z.ZodType): StandardSchemaWithJSON {
  const std = schema['~standard']
  const cache = new Map<string, Record<string, unknown>>()
  const convert = (options: { target: string }): Record<string, unknown> => {
    let json = cache.get(options.target)
    if (json == null) {
      json = std.jsonSchema.input(options as Parameters<typeof std.jsonSchema.input>[0])
      delete json.$schema
      cache.set(options.target, json)
    }
    return json
  }
  return {
    '~standard': {
      version: 1,
      vendor: 'bkg',
      validate: (value: unknown) => ({ value }),
      jsonSchema: { input: convert, output: convert }
    }
  }
}

const advertisedSchemas = new WeakMap<z.ZodType, StandardSchemaWithJSON>()
function advertisedOnce (schema: z.ZodType): StandardSchemaWithJSON {
  let wrapped = advertisedSchemas.get(schema)
  if (wrapped == null) {
    wrapped = advertised(schema)
    advertisedSchemas.set(schema, wrapped)
  }
  return wrapped
}

/** `path: message; …` for the first few issues of a failed parse */
export function describeZodError (err: z.ZodError): string {
  const parts = err.issues.slice(0, 3).map((issue) => {
    const path = issue.path.map((key) => typeof key === 'number' ? `[${key}]` : `.${String(key)}`).join('').replace(/^\./, '')
    return `${path === '' ? 'arguments' : path}: ${issue.message.replace(/^Invalid input: /, '')}`
  })
  if (err.issues.length > 3) parts.push(`and ${err.issues.length - 3} more`)
  return parts.join('; ')
}

/**
 * Registers tools on a server. Whatever a handler throws becomes a tool error (`isError: true`
 * with `{"error":{"code","message"}}`), never a protocol error: a BkgError keeps its code, bad
 * arguments are `invalid_input`, anything else is logged and answered `internal`.
 */
export function registerTools (server: McpServer, tools: ToolDefinition[], caller: (ctx: ServerContext) => McpCaller, log?: Pick<Logger, 'error'>): void {
  for (const tool of tools) {
    server.registerTool(tool.name, {
      title: tool.title,
      description: tool.description,
      inputSchema: advertisedOnce(tool.input),
      ...(tool.output != null ? { outputSchema: advertisedOnce(tool.output) } : {}),
      annotations: { title: tool.title, ...tool.annotations }
    }, async (raw: unknown, ctx: ServerContext): Promise<CallToolResult> => {
      const parsed = tool.input.safeParse(raw ?? {})
      if (!parsed.success) return toolError('invalid_input', `${tool.name}: ${describeZodError(parsed.error)}`)
      try {
        const out = await tool.run(parsed.data, { caller: caller(ctx), ctx })
        return { content: [{ type: 'text', text: tool.text?.(out) ?? JSON.stringify(out) }], structuredContent: out }
      } catch (err) {
        if (err instanceof BkgError) return toolError(err.code, err.message)
        if (err instanceof z.ZodError) return toolError('invalid_input', `${tool.name}: ${describeZodError(err)}`)
        log?.error({ err, tool: tool.name }, 'MCP tool failed')
        return toolError('internal', 'internal error; see the node log')
      }
    })
  }
}

/** Admin-only tools (the ones whose REST routes are admin-only) check this first. */
export function requireAdmin (caller: McpCaller, what: string): void {
  if (caller.principal.kind !== 'node-admin') throw new BkgError('forbidden', 403, `${what} needs the node admin token (api-token in the data dir)`)
  if (!caller.adminChecked) throw new BkgError('client_cert_required', 403, `${what} needs the node admin's client certificate on this node (--api-admin-mtls)`)
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** standard base64 (padding required), checked before it is decoded */
export const Base64 = z.string().regex(BASE64, 'must be standard base64 (A-Z a-z 0-9 + /, padded with =)')

/** bytes as UTF-8 text, or `{ base64 }` for binary data */
export const Content = z.union([z.string(), z.strictObject({ base64: Base64 })])
export type Content = z.infer<typeof Content>

export function decodeContent (content: Content): Uint8Array {
  return typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content.base64, 'base64')
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

/** valid UTF-8 comes back as text, anything else as `{ base64 }` */
export function encodeContent (bytes: Uint8Array): Content {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    return { base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') }
  }
}
