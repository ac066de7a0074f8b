import { createHash } from 'node:crypto'
import type { Blockstore } from 'interface-blockstore'
import type { CID } from 'multiformats/cid'
import { PackageError } from '../../protocols/model-package.ts'

const SHA2_256 = 0x12

/**
 * Reads blocks from a blockstore and checks each against its CID before handing it on, so any
 * file served from the store is verified block by block up to the manifest's root CID.
 */
export function verifyingReader (read: (cid: CID) => Promise<Uint8Array>): { get: (cid: CID) => AsyncGenerator<Uint8Array> } {
  return {
    async * get (cid: CID) {
      const block = await read(cid)
      if (cid.multihash.code !== SHA2_256) throw new PackageError('content_mismatch', `block ${cid.toString()} uses an unsupported hash`)
      const digest = createHash('sha256').update(block).digest()
      if (!digest.equals(cid.multihash.digest)) throw new PackageError('content_mismatch', `block ${cid.toString()} on disk is corrupt`)
      yield block
    }
  }
}

/** A blockstore view that records every CID written through it (the blocks one import added). */
export function recordingWriter (store: Blockstore, written: Set<string>): Pick<Blockstore, 'put'> {
  return {
    async put (cid, bytes, options) {
      written.add(cid.toString())
      return await store.put(cid, bytes, options)
    }
  }
}
