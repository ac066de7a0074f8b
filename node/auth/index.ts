/**
 * API bearer tokens: the node's admin token and namespace tokens (HMAC-signed claims with a
 * role and an optional expiry), and the lifetime helpers long-lived responses use.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { createNamespaceToken, verifyToken, whenExpired } from './auth/index.ts'
 *
 * const { token } = createNamespaceToken(secret, { namespace: 'lab', role: 'reader', ttlMs: 3_600_000 })
 * const principal = verifyToken(token, { adminToken, secret })   // null when forged or expired
 * const cancel = whenExpired(principal!, () => stream.end())
 */
export { createNamespaceToken, msUntilExpiry, parseDuration, TOKEN_ROLES, TokenError, verifyToken, whenExpired, type Principal, type TokenRole } from './tokens.ts'
