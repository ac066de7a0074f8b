/**
 * API bearer tokens: the node's admin token and namespace tokens (HMAC-signed claims with a
 * role and an optional expiry), the lifetime helpers long-lived responses use, and S3 access
 * keys, which are derived from the same secret (nothing stored; rotating the secret revokes both).
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { createNamespaceToken, verifyToken, whenExpired } from './auth/index.ts'
 *
 * const { token } = createNamespaceToken(secret, { namespace: 'lab', role: 'reader', ttlMs: 3_600_000 })
 * const principal = verifyToken(token, { adminToken, secret })   // null when forged or expired
 * const cancel = whenExpired(principal!, () => stream.end())
 * const { accessKeyId, secretAccessKey } = createS3Credentials(secret, 'lab', 'writer')
 */
export { createNamespaceToken, msUntilExpiry, parseDuration, TOKEN_ROLES, TokenError, verifyToken, whenExpired, type Principal, type TokenRole } from './tokens.ts'
export { createS3Credentials, resolveAccessKey, type S3Credentials } from './s3-credentials.ts'
