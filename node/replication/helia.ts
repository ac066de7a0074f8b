import type { BlockBroker, Helia as HeliaInterface } from '@helia/interface'
import * as dagCbor from '@ipld/dag-cbor'
import type { Blockstore } from 'interface-blockstore'
import type { Datastore } from 'interface-datastore'
import type { BlockCodec } from 'multiformats/codecs/interface'
import type { Host } from '../p2p/index.ts'

/** A Helia node over this node's own libp2p host (Helia's facade is typed without libp2p). */
export type BkgHelia = HeliaInterface & { libp2p: Host }

export interface BkgHeliaInit {
  host: Host
  blockstore: Blockstore
  datastore: Datastore
  blockBrokers: BlockBroker[]
}

interface HeliaClass {
  new (init: { name: string, version: string, blockstore: Blockstore, datastore: Datastore, blockBrokers: BlockBroker[], routers: [], codecs: Array<BlockCodec<any, any>> }): HeliaInterface
}

/**
 * Helia's core (blockstore with networked retrieval and CID verification, pins, codecs) bound to
 * the node's existing libp2p host and BKG's block broker.
 *
 * Loaded from its module file, not the `helia` package entry: the entry also imports Helia's
 * default libp2p stack (public bootstrap, autoTLS, delegated routing, HTTP gateways), which this
 * node never uses and which measured +40 MiB RSS and +1.3 s start-up per process here
 * (docs/architecture.md). The core class itself costs ~1 MiB.
 */
export async function createBkgHelia (init: BkgHeliaInit): Promise<BkgHelia> {
  const entry = import.meta.resolve('helia')
  const { Helia } = await import(new URL('./helia.js', entry).href) as { Helia: HeliaClass }
  const helia = new Helia({
    name: 'bkg',
    version: '1',
    blockstore: init.blockstore,
    datastore: init.datastore,
    blockBrokers: init.blockBrokers,
    // content routing is the host's DHT, used directly by the model service and the broker
    routers: [],
    // the replica log's entries (OrbitDB) are dag-cbor; dag-pb and raw are built in
    codecs: [dagCbor]
  }) as BkgHelia
  Object.defineProperty(helia, 'libp2p', { value: init.host, enumerable: true })
  return helia
}
