import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { verifyToken, type Principal } from '../auth/index.ts'
import { BkgError } from '../../lib/bkg-error.ts'

/** Who may call a route: anyone, any valid token, or the node's admin. */
export type Access = 'public' | 'token' | 'admin'

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access
  }
  interface FastifyRequest {
    principal: Principal | null
  }
}

/** the node's admin token, and the secret namespace tokens are signed with */
export interface ApiKeys {
  adminToken: string
  secret: string
}

export interface AuthOptions {
  keys: ApiKeys
  /** an extra check for admin routes after the token (`--api-admin-mtls`: the client certificate); throws BkgError */
  adminCheck?: ((request: FastifyRequest) => void) | null
}

const BEARER = /^Bearer\s+(\S+)$/i
const verified = new WeakMap<FastifyRequest, { token: string, principal: Principal | null }>()

/** The token a request carries: `Authorization: Bearer …`, or (`withQuery`, for browsers' WebSockets) `?token=`. */
export function requestToken (request: FastifyRequest, withQuery = false): string | undefined {
  const header = request.headers.authorization
  const fromHeader = header != null ? BEARER.exec(header)?.[1] : undefined
  if (fromHeader != null || !withQuery) return fromHeader
  const query = (request.query as Record<string, unknown> | undefined)?.token
  return typeof query === 'string' ? query : undefined
}

/**
 * The principal of a request's token, verified once per request: the rate limiter, the auth hook
 * and the realtime upgrade all ask, and a verification is an HMAC and a schema parse.
 */
export function principalOf (request: FastifyRequest, token: string, keys: ApiKeys): Principal | null {
  const known = verified.get(request)
  if (known?.token === token) return known.principal
  const principal = verifyToken(token, keys)
  verified.set(request, { token, principal })
  return principal
}

/**
 * Bearer-token authentication for every route. Routes declare `config.access`; anything that does
 * not is treated as admin-only, so a forgotten declaration fails closed. It runs in `preParsing`,
 * after the rate limiter's `onRequest`, so failed logins count against the limit, and before any
 * body is read.
 */
export const authPlugin = fp<AuthOptions>(async (app: FastifyInstance, options) => {
  app.decorateRequest('principal', null)
  app.addHook('preParsing', async (request: FastifyRequest, _reply, payload) => {
    // a path no route serves is a 404 for everyone: nothing there to protect, and a 401 would
    // send a caller hunting for a token instead of the typo (docs/api.md)
    if (request.is404) return payload
    const access = request.routeOptions.config?.access ?? 'admin'
    if (access === 'public') return payload
    const header = request.headers.authorization
    if (header == null) throw new BkgError('unauthorized', 401, 'missing Authorization: Bearer <token> header')
    const token = requestToken(request)
    if (token == null) throw new BkgError('unauthorized', 401, 'Authorization header must be "Bearer <token>"')
    const principal = principalOf(request, token, options.keys)
    if (principal == null) throw new BkgError('unauthorized', 401, 'invalid or expired token')
    if (access === 'admin' && principal.kind !== 'node-admin') {
      throw new BkgError('forbidden', 403, 'this route needs the node admin token (api-token in the data dir)')
    }
    // in addition to the token, never instead of it: a stolen token alone must not do admin work
    if (access === 'admin') options.adminCheck?.(request)
    request.principal = principal
    return payload
  })
}, { name: 'bkg-auth' })
