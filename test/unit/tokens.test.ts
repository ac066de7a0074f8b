import { describe, expect, it } from 'vitest'
import { createNamespaceToken, parseDuration, TokenError, verifyToken } from '../../node/auth/index.ts'

const keys = { adminToken: 'admin-token-value-0123456789', secret: 'secret-one' }
const NOW = Date.UTC(2030, 0, 1)

/** Replaces one character of `text` at `index` by a different base64url character. */
function flip (text: string, index: number): string {
  const c = text[index]
  return text.slice(0, index) + (c === 'A' ? 'B' : 'A') + text.slice(index + 1)
}

function parts (token: string): { body: string, mac: string } {
  const [body, mac] = token.slice('bkgt1.'.length).split('.')
  return { body, mac }
}

describe('namespace tokens', () => {
  it('round-trips: the issued principal is what verifyToken returns', () => {
    const { token, principal } = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'writer', ttlMs: 3_600_000, now: NOW })
    expect(token.startsWith('bkgt1.')).toBe(true)
    expect(principal).toMatchObject({ kind: 'namespace', role: 'writer', namespace: 'lab', expiresAt: NOW + 3_600_000 })
    expect(verifyToken(token, keys, NOW + 1000)).toEqual(principal)
  })

  it('issues distinct token ids', () => {
    const a = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'reader', ttlMs: null, now: NOW })
    const b = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'reader', ttlMs: null, now: NOW })
    expect(a.token).not.toBe(b.token)
    expect(a.principal.tokenId).not.toBe(b.principal.tokenId)
  })

  it('a token without expiry verifies far in the future', () => {
    const { token } = createNamespaceToken(keys.secret, { namespace: 'ns.1', role: 'reader', ttlMs: null, now: NOW })
    const principal = verifyToken(token, keys, NOW + 100 * 365 * 86_400_000)
    expect(principal?.expiresAt).toBeNull()
    expect(principal?.namespace).toBe('ns.1')
  })

  it('rejects a tampered body', () => {
    const { token } = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'reader', ttlMs: null, now: NOW })
    const { body, mac } = parts(token)
    for (const index of [0, Math.floor(body.length / 2), body.length - 2]) {
      expect(verifyToken(`bkgt1.${flip(body, index)}.${mac}`, keys, NOW)).toBeNull()
    }
    // a forged body claiming admin, with the original mac
    const forged = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Record<string, unknown>
    forged.role = 'admin'
    forged.ns = 'other'
    expect(verifyToken(`bkgt1.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${mac}`, keys, NOW)).toBeNull()
  })

  it('rejects a tampered mac', () => {
    const { token } = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'reader', ttlMs: null, now: NOW })
    const { body, mac } = parts(token)
    expect(verifyToken(`bkgt1.${body}.${flip(mac, 3)}`, keys, NOW)).toBeNull()
    expect(verifyToken(`bkgt1.${body}.`, keys, NOW)).toBeNull()
    expect(verifyToken(`bkgt1.${body}`, keys, NOW)).toBeNull()
    expect(verifyToken(`${token}.extra`, keys, NOW)).toBeNull()
    expect(verifyToken(token.replace('bkgt1.', 'bkgt2.'), keys, NOW)).toBeNull()
  })

  it('rejects a token signed with another secret', () => {
    const { token } = createNamespaceToken('secret-two', { namespace: 'lab', role: 'admin', ttlMs: null, now: NOW })
    expect(verifyToken(token, keys, NOW)).toBeNull()
    expect(verifyToken(token, { ...keys, secret: 'secret-two' }, NOW)).not.toBeNull()
  })

  it('rejects an expired token, exactly at and after its expiry', () => {
    const { token } = createNamespaceToken(keys.secret, { namespace: 'lab', role: 'reader', ttlMs: 60_000, now: NOW })
    expect(verifyToken(token, keys, NOW + 59_000)).not.toBeNull()
    expect(verifyToken(token, keys, NOW + 60_000)).toBeNull()
    expect(verifyToken(token, keys, NOW + 61_000)).toBeNull()
  })

  it('recognises the node admin token', () => {
    expect(verifyToken(keys.adminToken, keys, NOW)).toEqual({ kind: 'node-admin', role: 'admin', namespace: '*', tokenId: 'node-admin', expiresAt: null })
    expect(verifyToken(keys.adminToken + 'x', keys, NOW)).toBeNull()
    expect(verifyToken(keys.adminToken.slice(1), keys, NOW)).toBeNull()
  })

  it('rejects garbage', () => {
    for (const garbage of ['', 'x', 'bkgt1.', 'bkgt1..', 'Bearer x', 'bkgt1.!!!.???', `bkgt1.${'a'.repeat(3000)}.b`]) {
      expect(verifyToken(garbage, keys, NOW), garbage.slice(0, 20)).toBeNull()
    }
  })

  it('refuses to issue a token for an invalid namespace', () => {
    for (const namespace of ['UPPER', 'BAD!', '', '-lead', 'a'.repeat(64), 'white space']) {
      expect(() => createNamespaceToken(keys.secret, { namespace, role: 'reader', ttlMs: null }), namespace).toThrow(TokenError)
    }
  })
})

describe('parseDuration', () => {
  it('parses seconds, minutes, hours and days', () => {
    expect(parseDuration('90s')).toBe(90_000)
    expect(parseDuration('30m')).toBe(1_800_000)
    expect(parseDuration('12h')).toBe(43_200_000)
    expect(parseDuration('7d')).toBe(604_800_000)
    expect(parseDuration(' 1h ')).toBe(3_600_000)
  })

  it('reads never as no expiry', () => {
    expect(parseDuration('never')).toBeNull()
  })

  it('refuses a zero lifetime', () => {
    expect(() => parseDuration('0s')).toThrow(TokenError)
    expect(() => parseDuration('0d')).toThrow(/positive/)
  })

  it('refuses garbage with a TokenError', () => {
    for (const text of ['', 'garbage', '1', '1w', '-1h', '1.5h', 'h', '1 h', 'Never', '1h30m']) {
      expect(() => parseDuration(text), text).toThrow(TokenError)
    }
  })
})
