import { createHash, createHmac } from 'node:crypto'
import type { ChunkSigning } from '../../node/api/s3/aws-chunked.ts'
import { EMPTY_SHA256 } from '../../node/api/s3/sigv4.ts'

export interface EncodeAwsChunkedOptions {
  /** sign each chunk (STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or -TRAILER with trailers) */
  signing?: ChunkSigning
  trailers?: ReadonlyArray<readonly [string, string]>
}

/** Encodes a body the way a client does; for tests and tools, a server only decodes. */
export function encodeAwsChunked (chunks: readonly Uint8Array[], options: EncodeAwsChunkedOptions = {}): Buffer {
  const parts: Buffer[] = []
  let previous = options.signing?.seedSignature ?? ''
  for (const data of [...chunks.filter((chunk) => chunk.length > 0), new Uint8Array(0)]) {
    let header = data.length.toString(16)
    if (options.signing !== undefined) {
      const dataHash = createHash('sha256').update(data).digest('hex')
      const toSign = ['AWS4-HMAC-SHA256-PAYLOAD', options.signing.amzDate, options.signing.scope, previous, EMPTY_SHA256, dataHash].join('\n')
      previous = createHmac('sha256', options.signing.signingKey).update(toSign).digest('hex')
      header += `;chunk-signature=${previous}`
    }
    parts.push(Buffer.from(`${header}\r\n`, 'latin1'))
    if (data.length > 0) parts.push(Buffer.from(data), Buffer.from('\r\n'))
  }
  const trailers = options.trailers ?? []
  for (const [name, value] of trailers) parts.push(Buffer.from(`${name}:${value}\r\n`, 'latin1'))
  if (options.signing !== undefined && trailers.length > 0) {
    const canonical = trailers.map(([name, value]) => `${name}:${value}\n`).join('')
    const toSign = ['AWS4-HMAC-SHA256-TRAILER', options.signing.amzDate, options.signing.scope, previous,
      createHash('sha256').update(canonical, 'latin1').digest('hex')].join('\n')
    parts.push(Buffer.from(`x-amz-trailer-signature:${createHmac('sha256', options.signing.signingKey).update(toSign).digest('hex')}\r\n`))
  }
  parts.push(Buffer.from('\r\n'))
  return Buffer.concat(parts)
}
