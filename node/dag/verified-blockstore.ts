import { createHash } from 'node:crypto'
import * as dagPb from '@ipld/dag-pb'
import type { CID } from 'multiformats/cid'
import { PackageError } from '../../protocols/model-package.ts'
import { DAG_PB, RAW, SHA2_256 } from './layout.ts'

/** Throws unless the block's bytes (whole or as received chunks) hash to its CID. */
export function assertBlockMatches (cid: CID, block: Uint8Array | Iterable<Uint8Array>): void {
  if (cid.multihash.code !== SHA2_256) throw new PackageError('content_mismatch', `block ${cid.toString()} uses an unsupported hash`)
  const hash = createHash('sha256')
  if (block instanceof Uint8Array) hash.update(block)
  else for (const chunk of block) hash.update(chunk)
  if (!hash.digest().equals(cid.multihash.digest)) throw new PackageError('content_mismatch', `block ${cid.toString()} does not match its CID`)
}

/**
 * A file's bytes in order, walking its UnixFS DAG (raw leaves under dag-pb nodes, as
 * `buildUnixfsFile` builds it) one block at a time, each checked against its CID. Unlike the
 * UnixFS exporter, which queues every leaf of a layer without waiting for the reader (a whole
 * model in memory), this reads the next block only when the consumer asks for it.
 */
export async function * readDag (root: CID, read: (cid: CID) => Promise<Uint8Array>): AsyncGenerator<Uint8Array> {
  const block = await read(root)
  assertBlockMatches(root, block)
  if (root.code === RAW) {
    yield block
    return
  }
  if (root.code !== DAG_PB) throw new PackageError('content_mismatch', `block ${root.toString()} has an unexpected codec`)
  for (const link of dagPb.decode(block).Links) yield * readDag(link.Hash, read)
}
