import { createReadStream, createWriteStream } from 'node:fs'
import { open, rename, rm } from 'node:fs/promises'
import { once } from 'node:events'
import { dirname, basename, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import {
  decodeEnvelope, decodeHeader, encodeEnvelope, HEADER_BYTES, PackageError, totalSize, type Envelope
} from '../../protocols/model-package.ts'
import { assertDigestMatches, digestContent, packageFileBytes } from './content-digest.ts'

export interface OpenedPackage {
  envelope: Envelope
  /** byte offset of the first file's content */
  dataOffset: number
}

/** Reads and validates a package's envelope; checks the file holds exactly the bytes it declares. */
export async function openPackage (path: string): Promise<OpenedPackage> {
  let handle
  try {
    handle = await open(path, 'r')
  } catch (err) {
    throw new PackageError('package_malformed', `cannot open ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`)
  }
  try {
    const info = await handle.stat()
    if (!info.isFile()) throw new PackageError('package_malformed', `${path} is not a file`)
    const { size } = info
    const header = Buffer.alloc(HEADER_BYTES)
    await handle.read(header, 0, HEADER_BYTES, 0)
    const length = decodeHeader(size >= HEADER_BYTES ? header : header.subarray(0, size))
    if (HEADER_BYTES + length > size) throw new PackageError('package_malformed', 'package is truncated inside its envelope')
    const body = Buffer.alloc(length)
    await handle.read(body, 0, length, HEADER_BYTES)
    const envelope = decodeEnvelope(body)
    const dataOffset = HEADER_BYTES + length
    const expected = dataOffset + totalSize(envelope.manifest)
    if (size !== expected) {
      throw new PackageError('package_malformed', `package holds ${size - dataOffset} content bytes; its manifest declares ${expected - dataOffset}`)
    }
    return { envelope, dataOffset }
  } finally {
    await handle.close()
  }
}

/** Streams every file of an opened package and checks size, sha256 and UnixFS CID against the manifest. */
export async function verifyPackageContent (path: string, opened: OpenedPackage, onProgress?: (bytes: number) => void): Promise<void> {
  const { manifest } = opened.envelope
  let offset = opened.dataOffset
  for (const file of manifest.files) {
    assertDigestMatches(file, await digestContent(counting(packageFileBytes(path, offset, file.size), onProgress), manifest.chunkSize))
    offset += file.size
  }
}

/** Writes header, envelope and file contents to a temp file, fsyncs it and renames it into place. */
export async function writePackage (out: string, envelope: Envelope, sources: string[]): Promise<void> {
  const tmp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString('hex')}.tmp`)
  const stream = createWriteStream(tmp, { flags: 'wx', mode: 0o644 })
  try {
    // opening fails here (missing directory, no permission) instead of as an unhandled 'error'
    await once(stream, 'open').catch((err: NodeJS.ErrnoException) => {
      throw new PackageError('package_malformed', `cannot write ${out}: ${err.code === 'ENOENT' ? 'its directory does not exist' : err.message}`)
    })
    stream.write(encodeEnvelope(envelope))
    for (const [index, source] of sources.entries()) {
      const expected = envelope.manifest.files[index].size
      let written = 0
      for await (const chunk of createReadStream(source, { highWaterMark: 1024 * 1024 })) {
        written += (chunk as Buffer).byteLength
        if (!stream.write(chunk)) await once(stream, 'drain')
      }
      if (written !== expected) throw new PackageError('content_mismatch', `${source} changed while packing (${written} bytes, expected ${expected})`)
    }
    stream.end()
    await once(stream, 'finish')
    const handle = await open(tmp, 'r+')
    await handle.sync()
    await handle.close()
    await rename(tmp, out).catch((err: Error) => { throw new PackageError('package_malformed', `cannot write ${out}: ${err.message}`) })
  } catch (err) {
    stream.destroy()
    await rm(tmp, { force: true })
    throw err
  }
}

async function * counting (source: AsyncIterable<Buffer | Uint8Array>, onProgress?: (bytes: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    onProgress?.(chunk.byteLength)
    yield chunk
  }
}
