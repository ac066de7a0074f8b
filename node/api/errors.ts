import type { FastifyError, FastifyInstance } from 'fastify'
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod'
import { ServiceError } from '../errors.ts'

/** An error the API reports as `{ error: { code, message } }` with its HTTP status. */
export class ApiError extends Error {
  readonly status: number
  readonly code: string
  /** read by Fastify plugins (e.g. the rate limiter) that throw errors on our behalf */
  readonly statusCode: number
  constructor (status: number, code: string, message: string) {
    super(message)
    this.status = status
    this.statusCode = status
    this.code = code
  }
}

export function errorBody (code: string, message: string): { error: { code: string, message: string } } {
  return { error: { code, message } }
}

/** Every failure leaves the API in the same shape, whatever threw it. */
export function installErrorHandlers (app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | ApiError | Error, request, reply) => {
    if (err instanceof ApiError || err instanceof ServiceError) {
      return reply.status(err.status).send(errorBody(err.code, err.message))
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const first = err.validation[0]
      const where = first?.instancePath ? ` at ${first.instancePath}` : ''
      return reply.status(400).send(errorBody('invalid_request', `${err.validationContext ?? 'request'}${where}: ${first?.message ?? 'invalid'}`))
    }
    const status = (err as FastifyError).statusCode ?? 500
    if (status >= 500) {
      request.log.error({ err }, 'request failed')
      return reply.status(500).send(errorBody('internal', 'internal error; see the node log'))
    }
    const code = (err as FastifyError).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'unsupported_media_type'
      : (err as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 'body_too_large'
        : status === 429 ? 'rate_limited' : 'bad_request'
    return reply.status(status).send(errorBody(code, err.message))
  })
  app.setNotFoundHandler((request, reply) => {
    return reply.status(404).send(errorBody('not_found', `no route ${request.method} ${request.url.split('?')[0]}`))
  })
}
