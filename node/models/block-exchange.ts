import type { Connection, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { decodeWantList, encodeBlockFrame, MAX_FRAME_BYTES } from '../../protocols/blocks.ts'
import { BLOCKS_PROTOCOL, MANIFESTS_PROTOCOL } from '../../protocols/ids.ts'
import { ManifestRequest, MAX_MANIFEST_MESSAGE_BYTES } from '../../protocols/manifests.ts'
import type { ProtocolStreams } from '../p2p/index.ts'
import { DEFAULT_EXCHANGE_STREAMS } from './constants.ts'
import type { ModelStore } from './model-store.ts'
import { parseUntrustedJson } from '../../protocols/untrusted-json.ts'

export interface BlockExchangeDeps {
  /** serving /bkg/blocks and /bkg/manifests */
  streams: Pick<ProtocolStreams, 'handle' | 'unhandle'>
  store: ModelStore
  log: Pick<Logger, 'debug' | 'warn'>
}

/**
 * Serves held content to admitted peers: blocks by want-list on BLOCKS_PROTOCOL (many blocks per
 * request, written with backpressure) and signed envelopes on MANIFESTS_PROTOCOL.
 */
export class BlockExchange {
  private readonly deps: BlockExchangeDeps
  private readonly maxStreams: number

  constructor (deps: BlockExchangeDeps, maxStreams = DEFAULT_EXCHANGE_STREAMS) {
    this.deps = deps
    this.maxStreams = maxStreams
  }

  async start (): Promise<void> {
    const options = { maxInboundStreams: this.maxStreams, maxOutboundStreams: this.maxStreams }
    await this.deps.streams.handle(BLOCKS_PROTOCOL, async (stream) => { await this.serveBlocks(stream) }, options)
    await this.deps.streams.handle(MANIFESTS_PROTOCOL, async (stream, connection) => { await this.serveManifest(stream, connection) }, options)
  }

  async stop (): Promise<void> {
    await this.deps.streams.unhandle(BLOCKS_PROTOCOL)
    await this.deps.streams.unhandle(MANIFESTS_PROTOCOL)
  }

  private async serveBlocks (stream: Stream): Promise<void> {
    const channel = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    const signal = AbortSignal.timeout(120_000)
    try {
      const wants = decodeWantList((await channel.read({ signal })).subarray())
      // the next block is read from disk while the current one is encrypted and sent
      const read = (i: number): Promise<Uint8Array | null> | null => {
        if (i >= wants.length) return null
        const pending = this.deps.store.getBlock(wants[i])
        // if sending fails first, this read's own failure must not go unhandled
        pending.catch(() => {})
        return pending
      }
      let next = read(0)
      for (let i = 0; i < wants.length; i++) {
        const block = await next
        next = read(i + 1)
        await channel.write(encodeBlockFrame(wants[i], block), { signal })
      }
      await stream.close({ signal })
    } catch (err) {
      this.deps.log.debug({ err: (err as Error).message }, 'block request ended')
      stream.abort(err as Error)
    }
  }

  private async serveManifest (stream: Stream, connection: Connection): Promise<void> {
    const channel = lpStream(stream, { maxDataLength: MAX_MANIFEST_MESSAGE_BYTES })
    const signal = AbortSignal.timeout(10_000)
    try {
      const parsed = ManifestRequest.safeParse(parseUntrustedJson((await channel.read({ signal })).subarray()))
      let response: unknown
      if (!parsed.success) {
        response = { error: 'malformed request' }
      } else {
        const version = parsed.data.version ?? this.deps.store.latestVersion(parsed.data.name)
        const envelope = version == null ? undefined : this.deps.store.envelopeOf(parsed.data.name, version)
        response = envelope == null ? { error: 'not held here' } : { envelope }
      }
      await channel.write(new TextEncoder().encode(JSON.stringify(response)), { signal })
      await stream.close({ signal })
    } catch (err) {
      this.deps.log.debug({ err: (err as Error).message, peer: connection.remotePeer.toString() }, 'manifest request ended')
      stream.abort(err as Error)
    }
  }
}
