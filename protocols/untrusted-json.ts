/**
 * The JSON a node accepts from anyone else: HTTP bodies, WebSocket frames, gossip and stream
 * messages. `JSON.parse` and zod's recursive schemas both recurse, so a small document nested a
 * few thousand levels deep overflows the stack; nesting is therefore counted on the text, before
 * anything parses it. Strings that PostgreSQL cannot store (NUL) or that are not Unicode (unpaired
 * surrogates) are refused here too, so they fail as bad input instead of deep in a database.
 */
import { BkgError } from '../lib/bkg-error.ts'

/** deeper than any document BKG defines (event payloads included) needs */
export const MAX_JSON_DEPTH = 64

export interface JsonLimits {
  /** arrays and objects nested deeper than this are refused (default MAX_JSON_DEPTH) */
  maxDepth?: number
  /** UTF-8 bytes; unlimited when absent (callers that read a stream bound it there) */
  maxBytes?: number
  /** refuse `__proto__` keys, which poison an object later assigned from (Object.assign, for…in copies) */
  refuseProtoKeys?: boolean
}

export class UntrustedJsonError extends BkgError {
  /** JSON pointer of the offending value ('' for the document itself) */
  readonly pointer: string
  constructor (message: string, pointer = '') {
    super('invalid_json', 400, message)
    this.pointer = pointer
  }
}

/** Parses JSON from outside: size and depth checked on the text first, then strings and keys. */
export function parseUntrustedJson (input: string | Uint8Array, limits: JsonLimits = {}): unknown {
  // bytes are measured before they are decoded: an oversized message costs no decoding
  if (typeof input !== 'string' && limits.maxBytes != null && input.byteLength > limits.maxBytes) {
    throw new UntrustedJsonError(`larger than ${limits.maxBytes} bytes`)
  }
  let text: string
  if (typeof input === 'string') {
    text = input
  } else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(input)
    } catch {
      throw new UntrustedJsonError('not UTF-8 JSON: the bytes are not UTF-8')
    }
  }
  if (limits.maxBytes != null && Buffer.byteLength(text) > limits.maxBytes) {
    throw new UntrustedJsonError(`larger than ${limits.maxBytes} bytes`)
  }
  assertNestingWithin(text, limits.maxDepth ?? MAX_JSON_DEPTH)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new UntrustedJsonError(`not UTF-8 JSON: ${(err as Error).message}`)
  }
  assertStorable(value, limits.refuseProtoKeys === true)
  return value
}

/** Counts `[` and `{` outside strings; linear in the text, no recursion. */
export function assertNestingWithin (text: string, maxDepth: number): void {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++ // backslash: the next character is escaped
      else if (c === 0x22) inString = false
      continue
    }
    if (c === 0x22) {
      inString = true
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) throw new UntrustedJsonError(`nested deeper than ${maxDepth} levels`)
    } else if (c === 0x7d || c === 0x5d) {
      depth--
    }
  }
}

/** The reason a string cannot be stored or passed on, or null when it can. */
export function unstorableReason (text: string): string | null {
  if (text.includes('\u0000')) return 'contains NUL (\\u0000), which cannot be stored'
  if (!text.isWellFormed()) return 'contains an unpaired UTF-16 surrogate (not Unicode text)'
  return null
}

/**
 * Walks a parsed value (iteratively: its depth is already bounded, but a wide document must not
 * cost stack either) and refuses unstorable strings in keys and values, and if asked `__proto__` keys.
 */
export function assertStorable (value: unknown, refuseProtoKeys = false): void {
  const stack: Array<[unknown, string]> = [[value, '']]
  while (stack.length > 0) {
    const [current, pointer] = stack.pop()!
    if (typeof current === 'string') {
      const reason = unstorableReason(current)
      if (reason != null) throw new UntrustedJsonError(`string ${reason}`, pointer)
    } else if (Array.isArray(current)) {
      for (let i = 0; i < current.length; i++) stack.push([current[i], `${pointer}/${i}`])
    } else if (current != null && typeof current === 'object') {
      for (const [key, inner] of Object.entries(current)) {
        const at = `${pointer}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`
        const reason = unstorableReason(key)
        if (reason != null) throw new UntrustedJsonError(`key ${reason}`, pointer)
        if (refuseProtoKeys && key === '__proto__') throw new UntrustedJsonError('the key "__proto__" is not allowed', at)
        stack.push([inner, at])
      }
    }
  }
}

/** `body at /payload/a: string contains NUL …`: where and what, for an error message */
export function describeJsonError (err: UntrustedJsonError, what: string): string {
  return `${what}${err.pointer !== '' ? ` at ${err.pointer}` : ''}: ${err.message}`
}
