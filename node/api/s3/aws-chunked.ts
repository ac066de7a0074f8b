import { createHash, createHmac, timingSafeEqual, type Hash } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'
import {
  EMPTY_SHA256, SigV4Error, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER,
  type RequestHeaders, type VerifiedRequest
} from './sigv4.ts'

/**
 * Decoder for `Content-Encoding: aws-chunked` bodies, the framing S3 clients use to stream a body
 * of known length with per-chunk signatures or with checksum trailers:
 *
 *   signed:           <hex size>;chunk-signature=<sig>\r\n<data>\r\n ... 0;chunk-signature=<sig>\r\n\r\n
 *   unsigned trailer: <hex size>\r\n<data>\r\n ... 0\r\n<name>:<value>\r\n\r\n
 *   signed trailer:   signed chunks, then the trailer lines and x-amz-trailer-signature:<sig>\r\n\r\n
 *
 * Memory is bounded by the frame lines: payload bytes pass through as they arrive. A chunk's bytes
 * are therefore emitted before its signature can be checked; the decoder fails when it is wrong,
 * so a consumer must not commit what it wrote until the stream ends without error.
 */

export const MAX_CHUNK_BYTES = 16 * 1024 * 1024
/** a chunk header is ~90 bytes and a checksum trailer ~70, so anything near this is not a frame */
const MAX_LINE_BYTES = 4096
const MAX_TRAILER_BYTES = 16 * 1024
const SIGNATURE = /^[0-9a-f]{64}$/
const CR = 0x0d
const LF = 0x0a

export interface ChunkSigning {
  signingKey: Uint8Array
  /** the request signature; each chunk signature chains from the one before */
  seedSignature: string
  scope: string
  amzDate: string
}

export interface AwsChunkedOptions {
  /** the request's `x-amz-content-sha256`: one of the STREAMING-* modes */
  payloadHash: string
  /** `x-amz-decoded-content-length`; when given the payload must be exactly this long */
  decodedContentLength?: number
  /** trailer names from `x-amz-trailer`; each must appear in the body's trailer */
  expectedTrailers?: readonly string[]
  /** required for the signed modes */
  signing?: ChunkSigning
  maxChunkBytes?: number
}

type State = 'header' | 'data' | 'data-cr' | 'data-lf' | 'trailer' | 'done'

export function isAwsChunkedPayload (payloadHash: string): boolean {
  return payloadHash === STREAMING_SIGNED || payloadHash === STREAMING_SIGNED_TRAILER || payloadHash === STREAMING_UNSIGNED_TRAILER
}

/** Options for a request that verifyRequest accepted, read from its headers. */
export function awsChunkedOptions (auth: VerifiedRequest, headers: RequestHeaders): AwsChunkedOptions {
  const length = headers['x-amz-decoded-content-length']
  if (length !== undefined && (typeof length !== 'string' || !/^\d{1,15}$/.test(length))) {
    throw new SigV4Error('InvalidArgument', 400, 'x-amz-decoded-content-length must be a non-negative integer')
  }
  const trailer = headers['x-amz-trailer']
  const expectedTrailers = trailer === undefined
    ? []
    : (typeof trailer === 'string' ? [trailer] : trailer).flatMap((value) => value.split(',')).map((name) => name.trim().toLowerCase()).filter((name) => name !== '')
  return {
    payloadHash: auth.payloadHash,
    decodedContentLength: length === undefined ? undefined : Number(length),
    expectedTrailers,
    signing: { signingKey: auth.signingKey, seedSignature: auth.seedSignature, scope: auth.scope, amzDate: auth.amzDate }
  }
}

/**
 * Push parser: feed it the raw body in pieces split anywhere, get back the payload slices.
 * Every failure is a SigV4Error carrying S3's code.
 */
export class AwsChunkedParser {
  /** trailer values by lowercased name, complete once end() returned */
  readonly trailers = new Map<string, string>()
  private readonly signing: ChunkSigning | undefined
  private readonly withTrailer: boolean
  private readonly signedTrailer: boolean
  private readonly declaredLength: number | undefined
  private readonly expectedTrailers: readonly string[]
  private readonly maxChunkBytes: number
  private state: State = 'header'
  private readonly line = Buffer.alloc(MAX_LINE_BYTES)
  private lineLength = 0
  private remaining = 0
  private decoded = 0
  private chunkHash: Hash | undefined
  private chunkSignature = ''
  private previousSignature = ''
  private trailerBytes = 0
  private canonicalTrailer = ''
  private trailerSignature: string | undefined

  constructor (options: AwsChunkedOptions) {
    const signed = options.payloadHash === STREAMING_SIGNED || options.payloadHash === STREAMING_SIGNED_TRAILER
    if (!signed && options.payloadHash !== STREAMING_UNSIGNED_TRAILER) {
      throw new TypeError(`${options.payloadHash} is not an aws-chunked payload mode`)
    }
    if (signed && options.signing === undefined) throw new TypeError('signed aws-chunked payloads need the request signing key')
    this.signing = signed ? options.signing : undefined
    this.previousSignature = this.signing?.seedSignature ?? ''
    this.withTrailer = options.payloadHash !== STREAMING_SIGNED
    this.signedTrailer = options.payloadHash === STREAMING_SIGNED_TRAILER
    this.declaredLength = options.decodedContentLength
    this.expectedTrailers = options.expectedTrailers ?? []
    this.maxChunkBytes = options.maxChunkBytes ?? MAX_CHUNK_BYTES
  }

  /** payload bytes decoded so far */
  get decodedLength (): number {
    return this.decoded
  }

  /** Feeds the next raw bytes; returns the payload slices they complete (views into `bytes`). */
  push (bytes: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = []
    let i = 0
    while (i < bytes.length) {
      switch (this.state) {
        case 'header':
        case 'trailer': {
          const nl = bytes.indexOf(LF, i)
          const stop = nl === -1 ? bytes.length : nl
          this.appendLine(bytes.subarray(i, stop))
          if (nl === -1) return out
          i = nl + 1
          const line = this.takeLine()
          if (this.state === 'header') this.onChunkHeader(line)
          else this.onTrailerLine(line)
          break
        }
        case 'data': {
          const n = Math.min(this.remaining, bytes.length - i)
          const slice = bytes.subarray(i, i + n)
          this.chunkHash?.update(slice)
          out.push(slice)
          i += n
          this.decoded += n
          this.remaining -= n
          if (this.remaining === 0) this.state = 'data-cr'
          break
        }
        case 'data-cr':
          if (bytes[i++] !== CR) throw frameError('chunk data is not followed by CRLF')
          this.state = 'data-lf'
          break
        case 'data-lf':
          if (bytes[i++] !== LF) throw frameError('chunk data is not followed by CRLF')
          this.finishChunk()
          this.state = 'header'
          break
        case 'done':
          throw frameError('data follows the end of the aws-chunked body')
      }
    }
    return out
  }

  /** Call once the raw body ended: throws if it stopped early or did not carry what was declared. */
  end (): void {
    if (this.state !== 'done') {
      throw new SigV4Error('IncompleteBody', 400, 'The request body terminated unexpectedly')
    }
    if (this.declaredLength !== undefined && this.decoded !== this.declaredLength) {
      throw new SigV4Error('IncompleteBody', 400, 'You did not provide the number of bytes specified by the x-amz-decoded-content-length HTTP header')
    }
  }

  private appendLine (bytes: Uint8Array): void {
    if (this.lineLength + bytes.length > MAX_LINE_BYTES) throw frameError('an aws-chunked frame line is too long')
    this.line.set(bytes, this.lineLength)
    this.lineLength += bytes.length
  }

  /** The completed line without its CRLF; frame lines are ASCII, latin1 keeps any stray byte visible. */
  private takeLine (): string {
    const length = this.lineLength
    this.lineLength = 0
    if (length === 0 || this.line[length - 1] !== CR) throw frameError('aws-chunked lines must end with CRLF')
    if (this.state === 'trailer') {
      this.trailerBytes += length + 1
      if (this.trailerBytes > MAX_TRAILER_BYTES) throw trailerError('the trailer is too large')
    }
    return this.line.toString('latin1', 0, length - 1)
  }

  private onChunkHeader (line: string): void {
    const [size, ...extensions] = line.split(';')
    if (!/^[0-9a-fA-F]{1,16}$/.test(size)) throw frameError('a chunk size must be hexadecimal')
    const length = parseInt(size, 16)
    if (length > this.maxChunkBytes) throw frameError(`a chunk is larger than ${this.maxChunkBytes} bytes`)
    let signature: string | undefined
    for (const extension of extensions) {
      const eq = extension.indexOf('=')
      const name = eq === -1 ? extension : extension.slice(0, eq)
      // other chunk extensions carry nothing S3 clients rely on
      if (name !== 'chunk-signature') continue
      const value = eq === -1 ? '' : extension.slice(eq + 1)
      if (signature !== undefined || !SIGNATURE.test(value)) throw frameError('malformed chunk-signature')
      signature = value
    }
    if (this.signing !== undefined && signature === undefined) throw frameError('a signed chunk has no chunk-signature')
    if (this.declaredLength !== undefined && this.decoded + length > this.declaredLength) {
      throw frameError('the body is longer than x-amz-decoded-content-length')
    }
    this.chunkSignature = signature ?? ''
    if (length === 0) {
      if (this.signing !== undefined) this.checkChunkSignature(EMPTY_SHA256)
      this.state = 'trailer'
      return
    }
    this.chunkHash = this.signing !== undefined ? createHash('sha256') : undefined
    this.remaining = length
    this.state = 'data'
  }

  private finishChunk (): void {
    if (this.chunkHash !== undefined) this.checkChunkSignature(this.chunkHash.digest('hex'))
    this.chunkHash = undefined
  }

  private checkChunkSignature (dataHash: string): void {
    const signing = this.signing as ChunkSigning
    const toSign = ['AWS4-HMAC-SHA256-PAYLOAD', signing.amzDate, signing.scope, this.previousSignature, EMPTY_SHA256, dataHash].join('\n')
    if (!sameSignature(signing.signingKey, toSign, this.chunkSignature)) {
      throw new SigV4Error('SignatureDoesNotMatch', 403, 'The chunk signature we calculated does not match the signature you provided.')
    }
    this.previousSignature = this.chunkSignature
  }

  private onTrailerLine (line: string): void {
    if (line === '') {
      this.finishTrailer()
      return
    }
    if (!this.withTrailer) throw frameError('the final chunk must be followed by an empty line')
    if (this.trailerSignature !== undefined) throw trailerError('x-amz-trailer-signature must be the last trailer line')
    const colon = line.indexOf(':')
    if (colon <= 0) throw trailerError('a trailer line must be <name>:<value>')
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === 'x-amz-trailer-signature') {
      if (!this.signedTrailer || !SIGNATURE.test(value)) throw trailerError('unexpected x-amz-trailer-signature')
      this.trailerSignature = value
      return
    }
    if (this.trailers.has(name)) throw trailerError(`trailer ${name.slice(0, 64)} appears twice`)
    this.trailers.set(name, value)
    this.canonicalTrailer += `${name}:${value}\n`
  }

  private finishTrailer (): void {
    if (this.signedTrailer) {
      const signing = this.signing as ChunkSigning
      if (this.trailerSignature === undefined) throw trailerError('the trailer has no x-amz-trailer-signature')
      const trailerHash = createHash('sha256').update(this.canonicalTrailer, 'latin1').digest('hex')
      const toSign = ['AWS4-HMAC-SHA256-TRAILER', signing.amzDate, signing.scope, this.previousSignature, trailerHash].join('\n')
      if (!sameSignature(signing.signingKey, toSign, this.trailerSignature)) {
        throw new SigV4Error('SignatureDoesNotMatch', 403, 'The trailer signature we calculated does not match the signature you provided.')
      }
    }
    for (const name of this.expectedTrailers) {
      if (!this.trailers.has(name)) throw trailerError(`the trailer ${name.slice(0, 64)} named by x-amz-trailer is missing`)
    }
    this.state = 'done'
  }
}

/** The parser as a stream stage: `pipeline(req, decoder, sink)`; read `decoder.trailers` after it finished. */
export class AwsChunkedDecoder extends Transform {
  readonly parser: AwsChunkedParser

  constructor (options: AwsChunkedOptions) {
    super()
    this.parser = new AwsChunkedParser(options)
  }

  get trailers (): Map<string, string> {
    return this.parser.trailers
  }

  override _transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      for (const slice of this.parser.push(chunk)) this.push(slice)
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }

  override _flush (callback: TransformCallback): void {
    try {
      this.parser.end()
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }
}

/** The parser over an async iterable, e.g. `for await (const data of decodeAwsChunked(req, parser))`. */
export async function * decodeAwsChunked (source: AsyncIterable<Uint8Array>, parser: AwsChunkedParser): AsyncGenerator<Uint8Array> {
  for await (const bytes of source) yield * parser.push(bytes)
  parser.end()
}

function sameSignature (key: Uint8Array, toSign: string, given: string): boolean {
  const expected = createHmac('sha256', key).update(toSign, 'utf8').digest()
  return timingSafeEqual(expected, Buffer.from(given, 'hex'))
}

function frameError (message: string): SigV4Error {
  return new SigV4Error('InvalidRequest', 400, `Malformed aws-chunked body: ${message}`)
}

function trailerError (message: string): SigV4Error {
  return new SigV4Error('MalformedTrailerError', 400, `The request contained trailing data that was not well-formed: ${message}`)
}
