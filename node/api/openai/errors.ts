import type { FastifyInstance } from 'fastify'
import { retryAfterOf } from './chat-stream.ts'

/**
 * A busy refusal (the service's BkgError `llm_busy`, 429, with `retryAfterSeconds`) answers with
 * `Retry-After`; the API's own error handler then writes the body as for any error.
 */
export function installRetryAfter (app: FastifyInstance): void {
  app.setErrorHandler((err, _request, reply) => {
    const seconds = retryAfterOf(err)
    if (seconds != null) reply.header('retry-after', String(seconds))
    // the parent context's handler (node/api/errors.ts) takes a rethrown error
    throw err
  })
}

/** OpenAI's error `type` for a status, as its clients and SDKs read it */
export function openAiErrorType (status: number): string {
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_error'
  if (status === 404) return 'not_found_error'
  if (status === 429) return 'rate_limit_error'
  if (status >= 500) return 'server_error'
  return 'invalid_request_error'
}

/**
 * Errors of the OpenAI routes in OpenAI's shape, `{error: {message, type, param, code}}`: the
 * API's `{error: {code, message}}` gains `type` and `param`, whoever refused (auth, validation,
 * the service). The code stays BKG's.
 */
export function installOpenAiErrorShape (app: FastifyInstance): void {
  app.addHook('onSend', async (_request, reply, payload) => {
    if (reply.statusCode < 400 || typeof payload !== 'string') return payload
    try {
      const body = JSON.parse(payload) as { error?: { code?: string, message?: string } }
      if (body.error == null || typeof body.error.message !== 'string') return payload
      return JSON.stringify({ error: { message: body.error.message, type: openAiErrorType(reply.statusCode), param: null, code: body.error.code ?? null } })
    } catch {
      return payload
    }
  })
}
