import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import type { PackageFile } from '../../protocols/model-package.ts'
import { PackageError } from '../../protocols/model-package.ts'
import { buildUnixfsFile, type PutBlock } from '../dag/index.ts'

export interface ContentDigest {
  size: number
  sha256: string
  /** UnixFS root CID (CIDv1) of the content */
  cid: string
}

/**
 * One pass over a file's bytes yields its size, sha256 and UnixFS root CID; the DAG's blocks go
 * to `put` (by default nowhere) while the same chunks feed the hash.
 */
export async function digestContent (chunks: AsyncIterable<Uint8Array>, chunkSize: number, put: PutBlock = () => {}): Promise<ContentDigest> {
  const hash = createHash('sha256')
  async function * tapped (): AsyncGenerator<Uint8Array> {
    for await (const chunk of chunks) {
      hash.update(chunk)
      yield chunk
    }
  }
  const { cid, size } = await buildUnixfsFile(tapped(), chunkSize, put)
  return { size, sha256: hash.digest('hex'), cid: cid.toString() }
}

/** Throws `content_mismatch`, naming what differs, unless a digest is the manifest entry's. */
export function assertDigestMatches (file: PackageFile, digest: ContentDigest): void {
  const differs = [
    digest.size !== file.size && `size ${digest.size} ≠ ${file.size}`,
    digest.sha256 !== file.sha256 && 'sha256',
    digest.cid !== file.cid && 'UnixFS CID'
  ].filter(Boolean)
  if (differs.length > 0) throw new PackageError('content_mismatch', `${file.path}: content does not match the signed manifest (${differs.join(', ')})`)
}

/** The bytes of one file inside a package: `size` bytes from `offset`. */
export async function * packageFileBytes (path: string, offset: number, size: number): AsyncGenerator<Uint8Array> {
  if (size === 0) return
  yield * createReadStream(path, { start: offset, end: offset + size - 1, highWaterMark: 1024 * 1024 })
}
