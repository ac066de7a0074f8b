import { createHash } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { AKID, params, SECRET, sigv4Error } from './aws-examples.ts'
import {
  AwsChunkedDecoder, AwsChunkedParser, awsChunkedOptions, decodeAwsChunked, MAX_CHUNK_BYTES,
  type AwsChunkedOptions, type ChunkSigning
} from '../../node/api/s3/aws-chunked.ts'
import { encodeAwsChunked } from '../helpers/aws-chunked-encoder.ts'
import { checksumAlgorithmOf, createChecksum, crc32c } from '../../node/storage/checksums.ts'
import {
  deriveSigningKey, SigV4Error, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER, verifyRequest,
  type VerifiedRequest
} from '../../node/api/s3/sigv4.ts'

// The chunked upload example of the AWS S3 documentation ("Signature Calculations for the Authorization
// Header: Transferring Payload in Multiple Chunks"): 65536 + 1024 bytes of 'a', signed.
const DOC_SIGNATURES = [
  'ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648',
  '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497',
  'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9'
]
const DOC_BODY = Buffer.concat([
  Buffer.from(`10000;chunk-signature=${DOC_SIGNATURES[0]}\r\n`), Buffer.alloc(65536, 'a'), Buffer.from('\r\n'),
  Buffer.from(`400;chunk-signature=${DOC_SIGNATURES[1]}\r\n`), Buffer.alloc(1024, 'a'), Buffer.from('\r\n'),
  Buffer.from(`0;chunk-signature=${DOC_SIGNATURES[2]}\r\n\r\n`)
])
const DOC_HEADERS = {
  'content-encoding': 'aws-chunked',
  'content-length': '66824',
  host: 's3.amazonaws.com',
  'x-amz-content-sha256': STREAMING_SIGNED,
  'x-amz-date': '20130524T000000Z',
  'x-amz-decoded-content-length': '66560',
  'x-amz-storage-class': 'REDUCED_REDUNDANCY',
  authorization: 'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,' +
    'SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,' +
    'Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9'
}
const DOC_SIGNING: ChunkSigning = {
  signingKey: deriveSigningKey(SECRET, '20130524', 'us-east-1', 's3'),
  seedSignature: '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9',
  scope: '20130524/us-east-1/s3/aws4_request',
  amzDate: '20130524T000000Z'
}
const signedOptions = (decodedContentLength?: number): AwsChunkedOptions =>
  ({ payloadHash: STREAMING_SIGNED, signing: DOC_SIGNING, decodedContentLength })

/** Decodes `pieces` in order; returns the payload and the trailers. */
function decode (options: AwsChunkedOptions, pieces: Uint8Array[]): { data: Buffer, trailers: Map<string, string> } {
  const parser = new AwsChunkedParser(options)
  const out: Uint8Array[] = []
  for (const piece of pieces) out.push(...parser.push(piece))
  parser.end()
  return { data: Buffer.concat(out), trailers: parser.trailers }
}

/** Every way to cut `bytes` into two pieces, and into three for short inputs. */
function * splits (bytes: Buffer): Generator<Buffer[]> {
  for (let i = 0; i <= bytes.length; i++) {
    yield [bytes.subarray(0, i), bytes.subarray(i)]
    if (bytes.length > 160) continue
    for (let j = i; j <= bytes.length; j++) yield [bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)]
  }
}

const crc32Base64 = (data: Uint8Array): string => createChecksum('crc32').update(data).digest()

/** The body the AWS SDK v3 sends for a streamed PutObject with a checksum (STREAMING-UNSIGNED-PAYLOAD-TRAILER). */
function unsignedTrailerBody (chunks: string[]): Buffer {
  const data = Buffer.from(chunks.join(''))
  const framed = chunks.map((chunk) => `${Buffer.byteLength(chunk).toString(16)}\r\n${chunk}\r\n`).join('')
  return Buffer.from(`${framed}0\r\nx-amz-checksum-crc32:${crc32Base64(data)}\r\n\r\n`)
}

const unsignedOptions = (decodedContentLength?: number): AwsChunkedOptions =>
  ({ payloadHash: STREAMING_UNSIGNED_TRAILER, decodedContentLength, expectedTrailers: ['x-amz-checksum-crc32'] })

describe('the AWS documentation chunked upload', () => {
  it('decodes with the documented chunk signatures, chained from the verified seed signature', () => {
    expect(DOC_BODY.length).toBe(66824)
    const auth = verifyRequest({ method: 'PUT', path: '/examplebucket/chunkObject.txt', query: '', headers: DOC_HEADERS, lookupSecret: (id) => id === AKID ? SECRET : null, now: new Date('2013-05-24T00:00:00Z') })
    const options = awsChunkedOptions(auth, DOC_HEADERS)
    expect(options).toMatchObject({ payloadHash: STREAMING_SIGNED, decodedContentLength: 66560, expectedTrailers: [] })
    const { data } = decode(options, [DOC_BODY])
    expect(data.equals(Buffer.alloc(66560, 'a'))).toBe(true)
  })

  it('the encoder reproduces the documented body byte for byte', () => {
    expect(encodeAwsChunked([Buffer.alloc(65536, 'a'), Buffer.alloc(1024, 'a')], { signing: DOC_SIGNING }).equals(DOC_BODY)).toBe(true)
  })

  it('a tampered byte, signature or chunk order → SignatureDoesNotMatch (403)', () => {
    const flipped = Buffer.from(DOC_BODY)
    flipped[100] = 'b'.charCodeAt(0)
    const badSig = Buffer.from(DOC_BODY.toString('latin1').replace(DOC_SIGNATURES[1], DOC_SIGNATURES[0]), 'latin1')
    const badFinal = Buffer.from(DOC_BODY.toString('latin1').replace(DOC_SIGNATURES[2], '0'.repeat(64)), 'latin1')
    const swapped = encodeAwsChunked([Buffer.alloc(1024, 'a'), Buffer.alloc(65536, 'a')], { signing: DOC_SIGNING })
      .toString('latin1').replaceAll(/chunk-signature=[0-9a-f]+/g, (match, offset: number) => offset < 100 ? `chunk-signature=${DOC_SIGNATURES[1]}` : match)
    for (const body of [flipped, badSig, badFinal, Buffer.from(swapped, 'latin1')]) {
      const err = sigv4Error(() => decode(signedOptions(), [body]))
      expect([err.code, err.status]).toEqual(['SignatureDoesNotMatch', 403])
    }
    const otherKey = { ...DOC_SIGNING, signingKey: deriveSigningKey('other', '20130524', 'us-east-1', 's3') }
    expect(sigv4Error(() => decode({ payloadHash: STREAMING_SIGNED, signing: otherKey }, [DOC_BODY])).code).toBe('SignatureDoesNotMatch')
  })

  it('a body cut short or of the wrong decoded length → IncompleteBody / InvalidRequest', () => {
    const short = sigv4Error(() => decode(signedOptions(), [DOC_BODY.subarray(0, DOC_BODY.length - 2)]))
    expect([short.code, short.status]).toEqual(['IncompleteBody', 400])
    expect(sigv4Error(() => decode(signedOptions(66561), [DOC_BODY])).code).toBe('IncompleteBody')
    expect(sigv4Error(() => decode(signedOptions(66559), [DOC_BODY])).code).toBe('InvalidRequest')
    expect(sigv4Error(() => decode(signedOptions(), [DOC_BODY, Buffer.from('0')])).code).toBe('InvalidRequest')
  })
})

describe('signed chunks', () => {
  const body = encodeAwsChunked([Buffer.from('hello '), Buffer.from('wor'), Buffer.from('ld')], { signing: DOC_SIGNING })

  it('decode however the stream is split', () => {
    let cases = 0
    for (const pieces of splits(body)) {
      expect(decode(signedOptions(11), pieces).data.toString()).toBe('hello world')
      cases++
    }
    expect(cases).toBeGreaterThan(body.length)
    expect(decode(signedOptions(11), [...body].map((byte) => Uint8Array.of(byte))).data.toString()).toBe('hello world')
  })

  it('a chunk without a signature, or an unsigned body, is refused', () => {
    const unsigned = encodeAwsChunked([Buffer.from('hello')])
    expect(sigv4Error(() => decode(signedOptions(), [unsigned])).code).toBe('InvalidRequest')
  })

  it('signed trailers round-trip through this module\'s encoder (no published vector to check against)', () => {
    const data = Buffer.from('trailing checksum')
    const trailers = [['x-amz-checksum-crc32', crc32Base64(data)]] as const
    const framed = encodeAwsChunked([data], { signing: DOC_SIGNING, trailers })
    const options = { payloadHash: STREAMING_SIGNED_TRAILER, signing: DOC_SIGNING, expectedTrailers: ['x-amz-checksum-crc32'] }
    expect(decode(options, [framed]).trailers.get('x-amz-checksum-crc32')).toBe(crc32Base64(data))
    const tampered = Buffer.from(framed.toString('latin1').replace(crc32Base64(data), crc32Base64(Buffer.from('x'))), 'latin1')
    expect(sigv4Error(() => decode(options, [tampered])).code).toBe('SignatureDoesNotMatch')
    const unsignedTrailer = Buffer.from(framed.toString('latin1').replace(/x-amz-trailer-signature:[0-9a-f]+\r\n/, ''), 'latin1')
    expect(sigv4Error(() => decode(options, [unsignedTrailer])).code).toBe('MalformedTrailerError')
  })
})

describe('unsigned payload with a checksum trailer (the AWS SDK v3 default for streamed uploads)', () => {
  const body = unsignedTrailerBody(['Hello ', 'aws-chunked ', 'world'])
  const expected = 'Hello aws-chunked world'

  it('decodes and exposes the trailer, which matches the payload checksum', () => {
    expect(body.toString()).toBe(`6\r\nHello \r\nc\r\naws-chunked \r\n5\r\nworld\r\n0\r\nx-amz-checksum-crc32:${crc32Base64(Buffer.from(expected))}\r\n\r\n`)
    const { data, trailers } = decode(unsignedOptions(expected.length), [body])
    expect(data.toString()).toBe(expected)
    const trailer = trailers.get('x-amz-checksum-crc32') as string
    expect(checksumAlgorithmOf('x-amz-checksum-crc32')).toBe('crc32')
    expect(trailer).toBe(createChecksum('crc32').update(data).digest())
  })

  it('decodes however the stream is split', () => {
    for (const pieces of splits(body)) {
      const { data, trailers } = decode(unsignedOptions(expected.length), pieces)
      expect(data.toString()).toBe(expected)
      expect(trailers.get('x-amz-checksum-crc32')).toBe(crc32Base64(data))
    }
  })

  it('reads the options from the request headers', () => {
    const auth: VerifiedRequest = {
      accessKeyId: AKID,
      region: 'us-east-1',
      payloadHash: STREAMING_UNSIGNED_TRAILER,
      signingKey: Buffer.alloc(32),
      seedSignature: '0'.repeat(64),
      scope: 's',
      amzDate: 'd',
      signedHeaders: ['host'],
      presigned: false
    }
    const options = awsChunkedOptions(auth, { 'x-amz-decoded-content-length': '23', 'x-amz-trailer': 'X-Amz-Checksum-CRC32' })
    expect(options).toMatchObject({ decodedContentLength: 23, expectedTrailers: ['x-amz-checksum-crc32'] })
    expect(sigv4Error(() => awsChunkedOptions(auth, { 'x-amz-decoded-content-length': '-1' })).code).toBe('InvalidArgument')
  })

  it('a wrong decoded length, a missing trailer or a malformed one is refused', () => {
    expect(sigv4Error(() => decode(unsignedOptions(expected.length + 1), [body])).code).toBe('IncompleteBody')
    expect(sigv4Error(() => decode(unsignedOptions(expected.length - 1), [body])).code).toBe('InvalidRequest')
    const noTrailer = Buffer.from(body.toString().replace(/x-amz-checksum-crc32:.*\r\n/, ''))
    expect(sigv4Error(() => decode(unsignedOptions(), [noTrailer])).code).toBe('MalformedTrailerError')
    for (const trailer of ['no-colon', ':value', 'x-amz-trailer-signature:' + '0'.repeat(64)]) {
      const bad = Buffer.from(body.toString().replace(/x-amz-checksum-crc32:.*\r\n/, `${trailer}\r\n`))
      expect(sigv4Error(() => decode(unsignedOptions(), [bad])).code).toBe('MalformedTrailerError')
    }
  })
})

describe('framing errors', () => {
  const refusals: Array<[string, string]> = [
    ['a size that is not hex', 'zz\r\n'],
    ['an empty size', '\r\nabc'],
    ['LF without CR', '3\nabc\r\n0\r\n\r\n'],
    ['data not followed by CRLF', '3\r\nabcd\r\n0\r\n\r\n'],
    ['a chunk over 16 MiB', `${(MAX_CHUNK_BYTES + 1).toString(16)}\r\n`],
    ['a huge size', `${'f'.repeat(16)}\r\n`],
    ['an endless header line', '1'.repeat(5000)],
    ['bytes after the end', '0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\nextra']
  ]
  for (const [what, body] of refusals) {
    it(`${what} → InvalidRequest (400)`, () => {
      const err = sigv4Error(() => decode({ payloadHash: STREAMING_UNSIGNED_TRAILER }, [Buffer.from(body)]))
      expect([err.code, err.status]).toEqual(['InvalidRequest', 400])
    })
  }

  it('a 16 MiB chunk is accepted', () => {
    const data = Buffer.alloc(MAX_CHUNK_BYTES, 7)
    const { data: out } = decode({ payloadHash: STREAMING_UNSIGNED_TRAILER }, [encodeAwsChunked([data])])
    expect(out.equals(data)).toBe(true)
  })

  it('trailers are refused when the mode has none', () => {
    const err = sigv4Error(() => decode(signedOptions(), [Buffer.from(DOC_BODY.toString('latin1').replace(/\r\n\r\n$/, '\r\nx:y\r\n\r\n'), 'latin1')]))
    expect(err.code).toBe('InvalidRequest')
  })

  it('a payload mode that is not aws-chunked is a programming error', () => {
    expect(() => new AwsChunkedParser({ payloadHash: 'UNSIGNED-PAYLOAD' })).toThrow(TypeError)
    expect(() => new AwsChunkedParser({ payloadHash: STREAMING_SIGNED })).toThrow(TypeError)
  })
})

describe('stream adapters', () => {
  it('the Transform decodes through pipeline and exposes trailers', async () => {
    const body = unsignedTrailerBody(['abc', 'defgh'])
    const decoder = new AwsChunkedDecoder(unsignedOptions(8))
    const out: Buffer[] = []
    await pipeline(Readable.from([body.subarray(0, 5), body.subarray(5, 9), body.subarray(9)]), decoder, new Writable({
      write (chunk: Buffer, _encoding, callback) {
        out.push(chunk)
        callback()
      }
    }))
    expect(Buffer.concat(out).toString()).toBe('abcdefgh')
    expect(decoder.trailers.get('x-amz-checksum-crc32')).toBe(crc32Base64(Buffer.from('abcdefgh')))
  })

  it('the Transform fails the pipeline on a bad signature', async () => {
    const flipped = Buffer.from(DOC_BODY)
    flipped[5000] ^= 1
    const sink = new Writable({ write: (_chunk, _encoding, callback) => callback() })
    await expect(pipeline(Readable.from([flipped]), new AwsChunkedDecoder(signedOptions()), sink)).rejects.toMatchObject({ code: 'SignatureDoesNotMatch' })
  })

  it('the async generator decodes and reports a truncated body', async () => {
    const parser = new AwsChunkedParser(signedOptions())
    const hash = createHash('sha256')
    for await (const data of decodeAwsChunked(Readable.from([DOC_BODY]), parser)) hash.update(data)
    expect(hash.digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(66560, 'a')).digest('hex'))
    const drain = async (source: AsyncIterable<Uint8Array>): Promise<void> => {
      for await (const data of source) expect(data.length).toBeGreaterThan(0)
    }
    const truncated = decodeAwsChunked(Readable.from([DOC_BODY.subarray(0, 66000)]), new AwsChunkedParser(signedOptions()))
    await expect(drain(truncated)).rejects.toMatchObject({ code: 'IncompleteBody' })
  })
})

describe('checksums', () => {
  const check = Buffer.from('123456789')
  const hexToBase64 = (hex: string): string => Buffer.from(hex, 'hex').toString('base64')

  it('match the standard check values', () => {
    expect(createChecksum('crc32').update(check).digest()).toBe(hexToBase64('cbf43926'))
    expect(createChecksum('crc32c').update(check).digest()).toBe(hexToBase64('e3069283'))
    expect(createChecksum('sha1').update(check).digest()).toBe(hexToBase64('f7c3bc1d808e04732adf679965ccc34ca7ae3441'))
    expect(createChecksum('sha256').update(Buffer.alloc(0)).digest()).toBe(hexToBase64('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'))
    expect(createChecksum('crc32c').digest()).toBe('AAAAAA==')
    expect(checksumAlgorithmOf('x-amz-checksum-crc64nvme')).toBe(null)
  })

  it('crc32c: eight bytes at a time equals the bitwise definition, however the input is split', () => {
    const bitwise = (data: Uint8Array): number => {
      let crc = 0xffffffff
      for (const byte of data) {
        crc ^= byte
        for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1
      }
      return ~crc >>> 0
    }
    fc.assert(fc.property(fc.uint8Array({ maxLength: 100 }), fc.nat({ max: 100 }), (data, cut) => {
      const at = Math.min(cut, data.length)
      expect(crc32c(data.subarray(at), crc32c(data.subarray(0, at)))).toBe(bitwise(data))
    }), params())
  })
})

describe('fuzzing the framing', () => {
  /** The contract of the parser: decode or throw a SigV4Error, nothing else, ever. */
  function decodesOrSigV4Error (options: AwsChunkedOptions, pieces: Uint8Array[]): void {
    try {
      decode(options, pieces)
    } catch (err) {
      if (!(err instanceof SigV4Error)) {
        throw new Error(`threw ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)} instead of a SigV4Error`)
      }
    }
  }
  const modes: AwsChunkedOptions[] = [
    signedOptions(),
    { payloadHash: STREAMING_SIGNED_TRAILER, signing: DOC_SIGNING, expectedTrailers: ['x-amz-checksum-crc32'] },
    unsignedOptions(),
    { payloadHash: STREAMING_UNSIGNED_TRAILER, maxChunkBytes: 8 }
  ]
  const valid = [
    encodeAwsChunked([Buffer.from('abc'), Buffer.from('defg')], { signing: DOC_SIGNING }),
    encodeAwsChunked([Buffer.from('abc')], { signing: DOC_SIGNING, trailers: [['x-amz-checksum-crc32', 'NSRBwg==']] }),
    unsignedTrailerBody(['abc', 'defgh'])
  ]
  const frameBytes = fc.constantFrom(...[...'0123456789abcdefABCDEF;=:\r\n x-amz-chunk-signature'].map((c) => c.charCodeAt(0)))

  it('arbitrary bytes only ever throw SigV4Error', () => {
    const bytes = fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.array(frameBytes, { maxLength: 200 }).map((b) => Uint8Array.from(b)))
    fc.assert(fc.property(fc.constantFrom(...modes), bytes, fc.nat({ max: 200 }), (options, data, cut) => {
      decodesOrSigV4Error(options, [data.subarray(0, cut), data.subarray(cut)])
    }), params())
  })

  it('mutated valid bodies only ever throw SigV4Error', () => {
    const mutation = fc.tuple(fc.nat(), fc.nat({ max: 4 }), fc.uint8Array({ maxLength: 4 }))
    fc.assert(fc.property(fc.constantFrom(...modes), fc.constantFrom(...valid), fc.array(mutation, { minLength: 1, maxLength: 3 }), fc.nat(), (options, body, mutations, cut) => {
      let bytes = Buffer.from(body)
      for (const [at, remove, insert] of mutations) {
        const i = at % (bytes.length + 1)
        bytes = Buffer.concat([bytes.subarray(0, i), insert, bytes.subarray(i + remove)])
      }
      const c = cut % (bytes.length + 1)
      decodesOrSigV4Error(options, [bytes.subarray(0, c), bytes.subarray(c)])
    }), params())
  })
})
