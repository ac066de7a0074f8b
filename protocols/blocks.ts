import { CID } from 'multiformats/cid'
import { Uint8ArrayList } from 'uint8arraylist'
import { z } from 'zod'
import { parseUntrustedJson } from './untrusted-json.ts'
import { BkgError } from '../lib/bkg-error.ts'

/**
 * `/bkg/blocks/1.0.0`: the requester sends one want-list (uvarint-length-prefixed JSON), the
 * provider answers with one length-prefixed frame per wanted CID, in order, then closes:
 *
 *   frame = status (1 byte: 0 block, 1 missing) · CID length (uint16 BE) · CID bytes · block bytes
 *
 * A want-list carries many CIDs, so a transfer costs one round trip per batch, not per block.
 */
export const MAX_WANTS = 256
export const MAX_BLOCK_BYTES = 4 * 1024 * 1024
export const MAX_FRAME_BYTES = MAX_BLOCK_BYTES + 1 + 2 + 128

export const WantList = z.object({ want: z.array(z.string().max(128)).min(1).max(MAX_WANTS) }).strict()
export type WantList = z.infer<typeof WantList>

/** the block stays a list of the received chunks: a 1 MiB block is never copied to be read */
export type BlockFrame = { cid: CID, block: Uint8ArrayList | null }

export class BlockFrameError extends BkgError {
  constructor (message: string) {
    super('block_frame_malformed', 400, message)
  }
}

export function encodeWantList (cids: CID[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ want: cids.map(String) }))
}

export function decodeWantList (bytes: Uint8Array): CID[] {
  let json: unknown
  try {
    json = parseUntrustedJson(bytes)
  } catch (err) {
    throw new BlockFrameError(`want-list: ${(err as Error).message}`)
  }
  const parsed = WantList.safeParse(json)
  if (!parsed.success) throw new BlockFrameError(`want-list: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
  try {
    return parsed.data.want.map((text) => CID.parse(text))
  } catch {
    throw new BlockFrameError('want-list holds something that is not a CID')
  }
}

/** One frame; the block is not copied (a list of the header and the block bytes). */
export function encodeBlockFrame (cid: CID, block: Uint8Array | null): Uint8ArrayList {
  const head = new Uint8Array(3 + cid.bytes.byteLength)
  head[0] = block == null ? 1 : 0
  new DataView(head.buffer).setUint16(1, cid.bytes.byteLength)
  head.set(cid.bytes, 3)
  return block == null ? new Uint8ArrayList(head) : new Uint8ArrayList(head, block)
}

export function decodeBlockFrame (frame: Uint8ArrayList): BlockFrame {
  if (frame.byteLength < 3) throw new BlockFrameError('block frame too short')
  const status = frame.get(0)
  const cidLength = frame.getUint16(1)
  if (status > 1 || 3 + cidLength > frame.byteLength) throw new BlockFrameError('block frame header is malformed')
  let cid: CID
  try {
    cid = CID.decode(frame.subarray(3, 3 + cidLength))
  } catch {
    throw new BlockFrameError('block frame holds no valid CID')
  }
  if (status === 1) return { cid, block: null }
  return { cid, block: frame.sublist(3 + cidLength) }
}
