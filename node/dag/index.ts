/**
 * UnixFS DAGs as BKG builds and reads them, shared by the models (content of model packages) and
 * the storage service's blocks backend (objects kept as blocks): sha2-256 CIDv1, raw leaves under
 * balanced dag-pb nodes of at most UNIXFS_MAX_CHILDREN links. No I/O of its own: blocks go to and
 * come from the caller's functions, and every block read is checked against its CID (a mismatch
 * is a PackageError `content_mismatch`).
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { assertBlockMatches, buildUnixfsFile, layoutOf, RAW, readDag } from '../dag/index.ts'
 *
 * const blocks = new Map<string, Uint8Array>()
 * const { cid, size } = await buildUnixfsFile(chunks, 1024 * 1024, (cid, block) => { blocks.set(cid.toString(), block) })
 * const read = async (cid: CID) => blocks.get(cid.toString()) ?? await fetchBlock(cid)
 * for await (const bytes of readDag(cid, read)) out.write(bytes)   // every block checked
 *
 * // or walk it yourself, e.g. for a byte range:
 * const root = await read(cid)
 * assertBlockMatches(cid, root)
 * const { data, children } = cid.code === RAW ? { data: root, children: [] } : layoutOf(cid, root)
 */
export { layoutOf, RAW, type NodeLayout } from './layout.ts'
export { buildUnixfsFile, type PutBlock } from './unixfs-builder.ts'
export { assertBlockMatches, readDag } from './verified-blockstore.ts'
