import { createHash } from 'node:crypto'
import { buildUnixfsFile } from './unixfs-builder.ts'

export interface ContentDigest {
  size: number
  sha256: string
  /** UnixFS root CID (CIDv1) of the content */
  cid: string
}

/**
 * One pass over a file's bytes yields its size, sha256 and UnixFS root CID: the DAG is built and
 * thrown away while the same chunks feed the hash.
 */
export async function digestContent (chunks: AsyncIterable<Uint8Array>, chunkSize: number): Promise<ContentDigest> {
  const hash = createHash('sha256')
  let size = 0
  async function * tapped (): AsyncGenerator<Uint8Array> {
    for await (const chunk of chunks) {
      hash.update(chunk)
      size += chunk.byteLength
      yield chunk
    }
  }
  const { cid } = await buildUnixfsFile(tapped(), chunkSize, () => {})
  return { size, sha256: hash.digest('hex'), cid: cid.toString() }
}
