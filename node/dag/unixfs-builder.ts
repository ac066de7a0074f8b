import { createHash } from 'node:crypto'
import * as dagPb from '@ipld/dag-pb'
import { CID } from 'multiformats/cid'
import { Uint8ArrayList } from 'uint8arraylist'
import * as Digest from 'multiformats/hashes/digest'
import { UNIXFS_MAX_CHILDREN } from '../../protocols/model-package.ts'
import { DAG_PB, RAW, SHA2_256 } from './layout.ts'

/** a built block: its CID, the file bytes under it, and its DAG size (the parent link's Tsize) */
interface Built {
  cid: CID
  fileSize: bigint
  dagSize: number
}

export type PutBlock = (cid: CID, block: Uint8Array) => Promise<void> | void

function cidOf (code: number, block: Uint8Array): CID {
  return CID.createV1(code, Digest.create(SHA2_256, createHash('sha256').update(block).digest()))
}

/**
 * The UnixFS `Data` of a file node without inline data: Type = File (field 1), filesize (field 3)
 * and one blocksizes entry per link (field 4, not packed), as ipfs-unixfs marshals it. Encoded
 * here because ipfs-unixfs's protobuf runtime (protons-runtime 7.1) writes a uint64 in
 * [2^31, 2^32) as one byte and leaves the other four of its five uninitialised: the root of every
 * file of 2-4 GiB got a random filesize, so a random CID (found when a 2 GiB publish was refused).
 */
export function fileNodeData (fileSize: bigint, blockSizes: bigint[]): Uint8Array {
  const bytes: number[] = [0x08, 0x02, 0x18, ...varint(fileSize)]
  for (const size of blockSizes) bytes.push(0x20, ...varint(size))
  return Uint8Array.from(bytes)
}

function varint (value: bigint): number[] {
  const out: number[] = []
  let rest = value
  while (rest > 0x7fn) {
    out.push(Number(rest & 0x7fn) | 0x80)
    rest >>= 7n
  }
  out.push(Number(rest))
  return out
}

/**
 * Builds a file's UnixFS DAG in BKG's profile (protocols/model-package.ts: CIDv1, sha2-256,
 * fixed-size raw leaves, balanced layout of at most 1024 links per node, a single leaf is its own
 * root), streaming: only the open node of each level is kept. It produces the same blocks as
 * `ipfs-unixfs-importer` with those settings (tested block for block), except for files of 2-4
 * GiB, whose root the importer encodes wrongly (see fileNodeData).
 */
export async function buildUnixfsFile (content: AsyncIterable<Uint8Array>, chunkSize: number, put: PutBlock): Promise<{ cid: CID, size: number }> {
  const levels: Built[][] = [[]]
  let leaves = 0
  let size = 0

  async function addNode (level: number): Promise<void> {
    const children = levels[level]
    levels[level] = []
    const fileSize = children.reduce((sum, child) => sum + child.fileSize, 0n)
    const node = dagPb.prepare({ Data: fileNodeData(fileSize, children.map((child) => child.fileSize)), Links: children.map((child) => ({ Name: '', Tsize: child.dagSize, Hash: child.cid })) })
    const block = dagPb.encode(node)
    const cid = cidOf(DAG_PB, block)
    await put(cid, block)
    levels[level + 1] ??= []
    levels[level + 1].push({ cid, fileSize, dagSize: block.byteLength + children.reduce((sum, child) => sum + child.dagSize, 0) })
    if (levels[level + 1].length === UNIXFS_MAX_CHILDREN) await addNode(level + 1)
  }

  async function addLeaf (leaf: Uint8Array): Promise<void> {
    const cid = cidOf(RAW, leaf)
    await put(cid, leaf)
    leaves++
    levels[0].push({ cid, fileSize: BigInt(leaf.byteLength), dagSize: leaf.byteLength })
    if (levels[0].length === UNIXFS_MAX_CHILDREN) await addNode(0)
  }

  // fixed-size chunks: a leaf inside one received chunk is a view of it, one across chunks is copied once
  const pending = new Uint8ArrayList()
  for await (const chunk of content) {
    size += chunk.byteLength
    pending.append(chunk)
    while (pending.byteLength >= chunkSize) {
      await addLeaf(pending.subarray(0, chunkSize))
      pending.consume(chunkSize)
    }
  }
  if (pending.byteLength > 0 || leaves === 0) await addLeaf(pending.subarray())

  // a single leaf is the file's root; otherwise close every open node, bottom up
  if (leaves === 1) return { cid: levels[0][0].cid, size }
  for (let level = 0; level < levels.length; level++) {
    const open = levels[level]
    const isTop = levels.slice(level + 1).every((l) => l.length === 0)
    if (isTop && open.length === 1 && level > 0) return { cid: open[0].cid, size }
    if (open.length > 0) await addNode(level)
  }
  throw new Error('unreachable: a DAG without a root')
}
