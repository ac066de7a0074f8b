import { createHmac, randomBytes } from 'node:crypto'
import { NAMESPACE_PATTERN } from '../../ca/roles.ts'
import { TOKEN_ROLES, type Principal, type TokenRole } from './tokens.ts'

/**
 * S3 access keys for a namespace. They are derived, not stored: the access key id names the
 * role and namespace (base32) plus a random part, and the secret is an HMAC of the id under the
 * node's token secret, so any id this node issued can be checked without a key table, and no
 * one can mint one without the secret. As with tokens, rotating `token-secret` revokes them all.
 */
const PREFIX = 'BKG'
const ROLE_LETTER: Record<TokenRole, string> = { reader: 'R', writer: 'W', admin: 'A' }
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

export interface S3Credentials {
  accessKeyId: string
  secretAccessKey: string
}

export function createS3Credentials (secret: string, namespace: string, role: TokenRole): S3Credentials {
  if (!NAMESPACE_PATTERN.test(namespace)) throw new Error(`namespace "${namespace}" is not valid: 1-63 of a-z 0-9 . _ -, starting with a letter or digit`)
  const accessKeyId = `${PREFIX}${ROLE_LETTER[role]}${base32(Buffer.from(namespace))}0${base32(randomBytes(5))}`
  return { accessKeyId, secretAccessKey: secretFor(secret, accessKeyId) }
}

/** The secret and principal of an access key id this node issued, or null. */
export function resolveAccessKey (secret: string, accessKeyId: string): { secretAccessKey: string, principal: Principal } | null {
  const match = /^BKG([RWA])([A-Z2-7]+)0([A-Z2-7]{8})$/.exec(accessKeyId)
  if (match == null) return null
  const role = TOKEN_ROLES.find((r) => ROLE_LETTER[r] === match[1])!
  const namespace = unbase32(match[2])
  if (namespace == null || !NAMESPACE_PATTERN.test(namespace)) return null
  return {
    secretAccessKey: secretFor(secret, accessKeyId),
    principal: { kind: 'namespace', role, namespace, tokenId: accessKeyId, expiresAt: null }
  }
}

function secretFor (secret: string, accessKeyId: string): string {
  return createHmac('sha256', secret).update(`bkg-s3-key/1\n${accessKeyId}`).digest('base64url').slice(0, 40)
}

function base32 (bytes: Uint8Array): string {
  let out = ''
  let bits = 0
  let value = 0
  for (const byte of bytes) {
    value = (value << 8) | byte
    bits += 8
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31]
  return out
}

function unbase32 (text: string): string | null {
  let bits = 0
  let value = 0
  const out: number[] = []
  for (const char of text) {
    value = (value << 5) | BASE32.indexOf(char)
    bits += 5
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255)
      bits -= 8
    }
  }
  return Buffer.from(out).toString('utf8')
}
