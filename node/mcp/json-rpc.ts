import type { ServerResponse } from 'node:http'

/** A JSON-RPC error answered on a raw response (or the response ended, when its head went out already). */
export function jsonRpcError (res: ServerResponse, status: number, code: number, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end()
    return
  }
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }))
}

interface JsonRpcRequestLike { jsonrpc: '2.0', id: string | number | null, params?: unknown }

/** A JSON-RPC request envelope, or null for a plain body (the seed's aliases take both). */
export function asJsonRpc (body: unknown): JsonRpcRequestLike | null {
  if (body == null || typeof body !== 'object' || Array.isArray(body)) return null
  const record = body as Record<string, unknown>
  if (record.jsonrpc !== '2.0' || !('id' in record)) return null
  const id = record.id
  return { jsonrpc: '2.0', id: typeof id === 'string' || typeof id === 'number' ? id : null, params: record.params }
}
