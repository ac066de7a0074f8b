import { BkgError } from '../lib/bkg-error.ts'

/**
 * A minimal DER TLV reader. forge re-encodes what it parses (and normalises
 * some things on the way), so wherever a signature or a proof covers exact
 * bytes we slice them out of the original DER with this instead.
 */

export interface Tlv {
  /** identifier octet (class, constructed bit, tag number < 31) */
  tag: number
  /** offset of the identifier octet */
  start: number
  /** offset of the first content octet */
  contentStart: number
  /** offset just past the last content octet */
  end: number
}

export const TAG_INTEGER = 0x02
export const TAG_BIT_STRING = 0x03
export const TAG_OCTET_STRING = 0x04
export const TAG_NULL = 0x05
export const TAG_OID = 0x06
export const TAG_UTF8_STRING = 0x0c
export const TAG_UTC_TIME = 0x17
export const TAG_GENERALIZED_TIME = 0x18
export const TAG_SEQUENCE = 0x30
export const TAG_SET = 0x31

export class DerError extends BkgError {
  constructor (message: string) {
    super('der_malformed', 400, message)
  }
}

/** Reads one definite-length TLV at `offset`, which must end at or before `limit`. */
export function readTlv (buf: Uint8Array, offset: number, limit: number = buf.length): Tlv {
  if (offset + 2 > limit) throw new DerError('truncated DER')
  const tag = buf[offset]
  if ((tag & 0x1f) === 0x1f) throw new DerError('high tag numbers are not supported')
  let pos = offset + 1
  const first = buf[pos++]
  let length: number
  if (first < 0x80) {
    length = first
  } else {
    const count = first & 0x7f
    if (count === 0) throw new DerError('indefinite length is not DER')
    if (count > 4) throw new DerError('DER length too large')
    if (pos + count > limit) throw new DerError('truncated DER length')
    length = 0
    for (let i = 0; i < count; i++) length = length * 256 + buf[pos++]
    if (length < 0x80 || (count > 1 && buf[pos - count] === 0)) {
      throw new DerError('non-minimal DER length')
    }
  }
  const end = pos + length
  if (end > limit) throw new DerError('truncated DER value')
  return { tag, start: offset, contentStart: pos, end }
}

/** Reads a whole buffer as exactly one TLV. */
export function readSingleTlv (buf: Uint8Array): Tlv {
  const tlv = readTlv(buf, 0, buf.length)
  if (tlv.end !== buf.length) throw new DerError('trailing bytes after DER value')
  return tlv
}

/** The TLVs directly inside a constructed TLV. */
export function childrenOf (buf: Uint8Array, parent: Tlv): Tlv[] {
  if ((parent.tag & 0x20) === 0) throw new DerError('expected a constructed DER value')
  const out: Tlv[] = []
  let pos = parent.contentStart
  while (pos < parent.end) {
    const child = readTlv(buf, pos, parent.end)
    out.push(child)
    pos = child.end
  }
  return out
}

/** The complete encoding (identifier, length, contents) of a TLV. */
export function tlvBytes (buf: Uint8Array, tlv: Tlv): Uint8Array {
  return buf.subarray(tlv.start, tlv.end)
}

/** The content octets of a TLV. */
export function tlvContent (buf: Uint8Array, tlv: Tlv): Uint8Array {
  return buf.subarray(tlv.contentStart, tlv.end)
}
