import type { BlockBroker, BlockRetrievalOptions } from '@helia/interface'
import type { PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { AdmittedPeers } from '../admission/index.ts'
import type { Host } from '../p2p/index.ts'
import { findProviderIds, requestBlocks } from '../models/index.ts'

export interface BkgBlockBrokerDeps {
  host: Host
  peers: AdmittedPeers
}

/** peers asked at once for a single block */
const FANOUT = 4
const MAX_DHT_PROVIDERS = 8

/**
 * Helia's network side for single blocks (what `helia.blockstore.get` fetches when a block is not
 * on disk, e.g. OrbitDB log entries): asks connected admitted peers over BLOCKS_PROTOCOL first,
 * then the DHT's providers. Helia checks the returned bytes against the CID. Bulk model transfer
 * uses the same protocol with many blocks per want-list (see Puller).
 */
export function bkgBlockBroker (deps: BkgBlockBrokerDeps): BlockBroker {
  async function askPeer (peer: PeerId, cid: CID, signal: AbortSignal): Promise<Uint8Array> {
    for await (const frame of requestBlocks(deps.host, peer, [cid], signal)) {
      if (frame.block != null) return frame.block.subarray()
    }
    throw new Error(`${peer.toString()} does not hold ${cid.toString()}`)
  }

  async function firstOf (candidates: PeerId[], cid: CID, signal: AbortSignal): Promise<Uint8Array | undefined> {
    for (let i = 0; i < candidates.length; i += FANOUT) {
      signal.throwIfAborted()
      try {
        return await Promise.any(candidates.slice(i, i + FANOUT).map(async (peer) => await askPeer(peer, cid, signal)))
      } catch { /* none of this wave has it: the next */ }
    }
    return undefined
  }

  return {
    name: 'bkg-blocks',
    async retrieve (cid: CID, options: BlockRetrievalOptions = {}): Promise<Uint8Array> {
      const signal = options.signal ?? AbortSignal.timeout(30_000)
      const connected = deps.host.getPeers().filter((peer) => deps.peers.isAdmitted(peer))
      const direct = await firstOf(connected, cid, signal)
      if (direct != null) return direct
      const providers = await findProviderIds(deps.host, cid, { max: MAX_DHT_PROVIDERS, skip: new Set(connected.map(String)), signal })
      const found = await firstOf(providers, cid, signal)
      if (found != null) return found
      throw new Error(`no admitted peer holds ${cid.toString()}`)
    }
  }
}
