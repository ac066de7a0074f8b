import type { BlockBroker, BlockRetrievalOptions } from '@helia/interface'
import type { PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { AdmittedPeers } from '../admission/index.ts'
import type { Host } from '../p2p/index.ts'
import { findProviderIds, requestBlocks } from '../models/index.ts'
import { DEFAULT_BLOCK_FANOUT, DEFAULT_BLOCK_TIMEOUT_MS, DEFAULT_MAX_DHT_PROVIDERS } from './constants.ts'

export interface BkgBlockBrokerDeps {
  host: Host
  peers: Pick<AdmittedPeers, 'isAdmitted'>
}

export interface BkgBlockBrokerInit {
  /** peers asked at once for a single block */
  fanout?: number
  /** DHT providers asked when no connected peer holds the block */
  maxDhtProviders?: number
  /** how long one block is looked for when Helia passes no signal */
  timeoutMs?: number
}

/**
 * Helia's network side for single blocks (what `helia.blockstore.get` fetches when a block is not
 * on disk, e.g. OrbitDB log entries): asks connected admitted peers over BLOCKS_PROTOCOL first,
 * then the DHT's providers. Helia checks the returned bytes against the CID. Bulk model transfer
 * uses the same protocol with many blocks per want-list (see Puller).
 */
export function bkgBlockBroker (deps: BkgBlockBrokerDeps, init: BkgBlockBrokerInit = {}): BlockBroker {
  const fanout = init.fanout ?? DEFAULT_BLOCK_FANOUT
  const maxDhtProviders = init.maxDhtProviders ?? DEFAULT_MAX_DHT_PROVIDERS
  const timeoutMs = init.timeoutMs ?? DEFAULT_BLOCK_TIMEOUT_MS

  async function askPeer (peer: PeerId, cid: CID, signal: AbortSignal): Promise<Uint8Array> {
    for await (const frame of requestBlocks(deps.host, peer, [cid], signal)) {
      if (frame.block != null) return frame.block.subarray()
    }
    throw new Error(`${peer.toString()} does not hold ${cid.toString()}`)
  }

  async function firstOf (candidates: PeerId[], cid: CID, signal: AbortSignal): Promise<Uint8Array | undefined> {
    for (let i = 0; i < candidates.length; i += fanout) {
      signal.throwIfAborted()
      try {
        return await Promise.any(candidates.slice(i, i + fanout).map(async (peer) => await askPeer(peer, cid, signal)))
      } catch { /* none of this wave has it: the next */ }
    }
    return undefined
  }

  return {
    name: 'bkg-blocks',
    async retrieve (cid: CID, options: BlockRetrievalOptions = {}): Promise<Uint8Array> {
      const signal = options.signal ?? AbortSignal.timeout(timeoutMs)
      const connected = deps.host.getPeers().filter((peer) => deps.peers.isAdmitted(peer))
      const direct = await firstOf(connected, cid, signal)
      if (direct != null) return direct
      const providers = await findProviderIds(deps.host, cid, { max: maxDhtProviders, skip: new Set(connected.map(String)), signal })
      const found = await firstOf(providers, cid, signal)
      if (found != null) return found
      throw new Error(`no admitted peer holds ${cid.toString()}`)
    }
  }
}
