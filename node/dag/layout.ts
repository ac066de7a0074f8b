import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import type { CID } from 'multiformats/cid'
import { PackageError } from '../../protocols/model-package.ts'

export const RAW = 0x55
export const DAG_PB = 0x70
/** multihash code of sha2-256, the only hash package content uses */
export const SHA2_256 = 0x12

/** Where a UnixFS file node's own bytes and its children lie, relative to the node's first byte. */
export interface NodeLayout {
  data: Uint8Array | null
  children: Array<{ cid: CID, offset: number, length: number }>
}

/** Reads a dag-pb UnixFS node (already checked against its CID); throws PackageError when it is not one. */
export function layoutOf (cid: CID, block: Uint8Array): NodeLayout {
  if (cid.code !== DAG_PB) throw new PackageError('content_mismatch', `block ${cid.toString()} has an unexpected codec ${cid.code}`)
  let node: dagPb.PBNode
  let unixfs: UnixFS
  try {
    node = dagPb.decode(block)
    unixfs = UnixFS.unmarshal(node.Data ?? new Uint8Array())
  } catch {
    throw new PackageError('content_mismatch', `block ${cid.toString()} is not a UnixFS node`)
  }
  if (unixfs.blockSizes.length !== node.Links.length) {
    throw new PackageError('content_mismatch', `block ${cid.toString()} lists ${unixfs.blockSizes.length} sizes for ${node.Links.length} links`)
  }
  const data = unixfs.data != null && unixfs.data.byteLength > 0 ? unixfs.data : null
  let offset = data?.byteLength ?? 0
  const children = node.Links.map((link, i) => {
    const length = Number(unixfs.blockSizes[i])
    const child = { cid: link.Hash, offset, length }
    offset += length
    return child
  })
  return { data, children }
}
