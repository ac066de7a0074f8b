import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { z } from 'zod'
import { BkgError } from '../../lib/bkg-error.ts'

export const TOKEN_ROLES = ['reader', 'writer', 'admin'] as const
export type TokenRole = typeof TOKEN_ROLES[number]

/** What a bearer token lets its holder do: the whole node (admin token) or one namespace. */
export interface Principal {
  kind: 'node-admin' | 'namespace'
  role: TokenRole
  /** `*` for the node's admin token */
  namespace: string
  tokenId: string
  expiresAt: number | null
}

const Claims = z.object({
  v: z.literal(1),
  jti: z.string().min(8).max(64),
  ns: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/),
  role: z.enum(TOKEN_ROLES),
  iat: z.number().int(),
  exp: z.number().int().nullable()
}).strict()

const PREFIX = 'bkgt1.'
const MAX_TTL_MS = 3650 * 86_400_000

/** a token that cannot be issued as asked (a bad lifetime, namespace or role) */
export class TokenError extends BkgError {
  constructor (message: string) {
    super('invalid_request', 400, message)
  }
}

export function createNamespaceToken (secret: string, init: { namespace: string, role: TokenRole, ttlMs: number | null, now?: number }): { token: string, principal: Principal } {
  const now = init.now ?? Date.now()
  const claims = Claims.safeParse({
    v: 1,
    jti: randomBytes(9).toString('base64url'),
    ns: init.namespace,
    role: init.role,
    iat: Math.floor(now / 1000),
    exp: init.ttlMs == null ? null : Math.floor((now + init.ttlMs) / 1000)
  })
  if (!claims.success) throw new TokenError(`cannot issue token: ${claims.error.issues[0]?.path.join('.')}: ${claims.error.issues[0]?.message}`)
  const body = Buffer.from(JSON.stringify(claims.data)).toString('base64url')
  return { token: `${PREFIX}${body}.${sign(secret, body)}`, principal: toPrincipal(claims.data) }
}

/** Returns the principal of a valid token, or null for anything forged, malformed or expired. */
export function verifyToken (token: string, keys: { adminToken: string, secret: string }, now = Date.now()): Principal | null {
  if (safeEqual(token, keys.adminToken)) {
    return { kind: 'node-admin', role: 'admin', namespace: '*', tokenId: 'node-admin', expiresAt: null }
  }
  if (!token.startsWith(PREFIX) || token.length > 2048) return null
  const [body, mac, extra] = token.slice(PREFIX.length).split('.')
  if (body == null || mac == null || extra != null) return null
  if (!safeEqual(mac, sign(keys.secret, body))) return null
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'))
  } catch {
    return null
  }
  const claims = Claims.safeParse(json)
  if (!claims.success) return null
  if (claims.data.exp != null && claims.data.exp * 1000 <= now) return null
  return toPrincipal(claims.data)
}

/** Milliseconds the principal's token is still good for (Infinity for tokens that never expire). */
export function msUntilExpiry (principal: Principal, now = Date.now()): number {
  return principal.expiresAt == null ? Infinity : Math.max(0, principal.expiresAt - now)
}

/**
 * Calls `onExpired` once, when the principal's token expires (never for a token without expiry);
 * returns a cancel function. Long-lived responses (streams, sockets, long polls) use it so that no
 * data reaches a principal after its token has expired.
 */
export function whenExpired (principal: Principal, onExpired: () => void): () => void {
  let timer: NodeJS.Timeout | undefined
  const arm = (): void => {
    const left = msUntilExpiry(principal)
    if (left === Infinity) return
    // setTimeout holds at most ~24.8 days: a longer wait is re-armed when it fires
    timer = setTimeout(() => { if (msUntilExpiry(principal) > 0) arm(); else onExpired() }, Math.min(left, 2 ** 31 - 1))
    timer.unref()
  }
  arm()
  return () => clearTimeout(timer)
}

/** Durations as the CLI takes them: 90s, 30m, 12h, 7d, or `never`. */
export function parseDuration (text: string): number | null {
  if (text === 'never') return null
  const match = /^(\d+)(s|m|h|d)$/.exec(text.trim())
  if (match == null) throw new TokenError(`"${text}" is not a duration: use e.g. 90s, 30m, 12h, 7d or never`)
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd']
  const ms = Number(match[1]) * unit
  if (ms <= 0) throw new TokenError('a token lifetime must be positive')
  if (ms > MAX_TTL_MS) throw new TokenError(`a token lifetime may be at most ${MAX_TTL_MS / 86_400_000}d; use \`never\` for a token that does not expire`)
  return ms
}

function toPrincipal (claims: z.infer<typeof Claims>): Principal {
  return { kind: 'namespace', role: claims.role, namespace: claims.ns, tokenId: claims.jti, expiresAt: claims.exp == null ? null : claims.exp * 1000 }
}

function sign (secret: string, body: string): string {
  return createHmac('sha256', secret).update(PREFIX + body).digest('base64url')
}

function safeEqual (a: string, b: string): boolean {
  const left = Buffer.from(a)
  const right = Buffer.from(b)
  return left.length === right.length && timingSafeEqual(left, right)
}
