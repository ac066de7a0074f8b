/**
 * A small Fastify app serving the MCP plugin on 127.0.0.1 with fake services, wired as
 * createApiServer wires its routes: the API's auth plugin (bearer tokens, `config.access`) and
 * error handlers, so `principalOf` is `request.principal`. With `standalone`, no auth plugin:
 * the MCP plugin's own check is all there is.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { authPlugin, requestToken, type ApiKeys } from '../../node/api/auth.ts'
import { installErrorHandlers } from '../../node/api/errors.ts'
import { createNamespaceToken, verifyToken } from '../../node/auth/index.ts'
import { mcpRoutes, type McpRoutesOptions } from '../../node/mcp/index.ts'
import { fakeServices } from './fakes.ts'

export interface TestApp {
  app: FastifyInstance
  url: string
  mcpUrl: URL
  keys: ApiKeys
  tokens: { admin: string, writer: string, reader: string, other: string }
  services: ReturnType<typeof fakeServices>
  close: () => Promise<void>
}

export async function startApp (options: { standalone?: boolean, mcp?: Partial<McpRoutesOptions> } = {}): Promise<TestApp> {
  const keys: ApiKeys = { adminToken: 'admin-token-0123456789abcdef', secret: 'secret-0123456789abcdef0123456789' }
  const services = fakeServices()
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 }) as unknown as FastifyInstance
  installErrorHandlers(app)
  if (options.standalone !== true) await app.register(authPlugin, { keys })
  await app.register(mcpRoutes, {
    services,
    principalOf: options.standalone === true
      ? (request) => {
          const token = requestToken(request)
          return token != null ? verifyToken(token, keys) : null
        }
      : (request) => request.principal,
    ...options.mcp
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  const url = `http://127.0.0.1:${typeof address === 'object' && address != null ? address.port : 0}`
  const token = (namespace: string, role: 'reader' | 'writer' | 'admin'): string => createNamespaceToken(keys.secret, { namespace, role, ttlMs: null }).token
  return {
    app,
    url,
    mcpUrl: new URL(`${url}/mcp`),
    keys,
    tokens: { admin: keys.adminToken, writer: token('lab', 'writer'), reader: token('lab', 'reader'), other: token('other', 'writer') },
    services,
    close: async () => { await app.close() }
  }
}

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** the JSON error body of a tool error result */
export function toolErrorOf (result: { isError?: boolean, content?: unknown }): { code: string, message: string } | null {
  if (result.isError !== true) return null
  const first = (result.content as Array<{ type: string, text?: string }> | undefined)?.[0]
  return (JSON.parse(first?.text ?? '{}') as { error?: { code: string, message: string } }).error ?? null
}
