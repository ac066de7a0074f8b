import type { PeerId, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { CID } from 'multiformats/cid'
import { decodeBlockFrame, encodeWantList, MAX_FRAME_BYTES, type BlockFrame } from '../../protocols/blocks.ts'
import { BLOCKS_PROTOCOL } from '../../protocols/ids.ts'
import { PackageError } from '../../protocols/model-package.ts'
import type { Host, ProtocolStreams } from '../p2p/index.ts'

/** finding providers: this node's PeerId (never its own provider) and the DHT */
export type ProviderRouting = Pick<Host, 'peerId'> & { contentRouting: Pick<Host['contentRouting'], 'findProviders'> }
/** opening a stream to a peer for a protocol */
export type BlockDialer = Pick<ProtocolStreams, 'dialProtocol'>

/**
 * Up to `max` providers of a CID from the DHT, other than this node and the ones in `skip`;
 * an empty list when the lookup fails or times out.
 */
export async function findProviderIds (routing: ProviderRouting, cid: CID, options: { max: number, skip?: Set<string>, signal: AbortSignal }): Promise<PeerId[]> {
  const found = new Map<string, PeerId>()
  try {
    for await (const provider of routing.contentRouting.findProviders(cid, { signal: options.signal })) {
      const id = provider.id.toString()
      if (provider.id.equals(routing.peerId) || options.skip?.has(id)) continue
      found.set(id, provider.id)
      if (found.size >= options.max) break
    }
  } catch {
    // what was found before the lookup ended still counts
  }
  return [...found.values()]
}

/**
 * Sends one want-list to a provider and yields its answers in the order asked (`block: null` when
 * it does not hold one). The provider writes the whole batch at once; the stream's buffer holds it
 * while the caller verifies and stores the blocks, which bounds memory by batch size per stream.
 * Throws PackageError when the provider answers with a CID that was not asked for.
 */
export async function * requestBlocks (dialer: BlockDialer, peer: PeerId, batch: CID[], signal: AbortSignal): AsyncGenerator<BlockFrame> {
  const stream: Stream = await dialer.dialProtocol(peer, BLOCKS_PROTOCOL, { signal })
  const channel = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES, maxBufferSize: batch.length * (MAX_FRAME_BYTES + 16) })
  try {
    await channel.write(encodeWantList(batch), { signal })
    for (const asked of batch) {
      const frame = decodeBlockFrame(await channel.read({ signal }))
      if (frame.cid.toString() !== asked.toString()) throw new PackageError('content_mismatch', `provider answered ${frame.cid.toString()} where ${asked.toString()} was asked`)
      yield frame
    }
    await stream.close({ signal }).catch(() => {}) // every block is read: a failed close costs nothing but the stream
  } catch (err) {
    stream.abort(err as Error)
    throw err
  } finally {
    // the caller stopped early (return/throw into the generator): free the stream
    if (stream.status === 'open') stream.abort(new Error('request abandoned'))
  }
}
