import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { BkgError } from '../../lib/bkg-error.ts'
import { bufferSource, MAX_HEADER_BYTES, parseGgufHeader, readGgufFacts, type ByteSource } from '../../node/llm/gguf/gguf-header.ts'
import { writeGguf, type GgufSpec, type GgufTensorSpec, type GgufValue } from '../../node/llm/gguf/gguf-writer.ts'
import { TEST_MODEL_FACTS, testModelGguf } from '../../node/llm/gguf/test-model.ts'
import { writeTestModel } from '../helpers/llm.ts'
import { tempDir } from '../helpers/mesh.ts'

type Code = 'gguf_invalid' | 'gguf_unsupported'

/** resolves to the refusal (never anything but a BkgError with one of the GGUF codes) */
async function refusal (bytes: Uint8Array | ByteSource, options?: { maxHeaderBytes?: number }): Promise<BkgError> {
  const source = bytes instanceof Uint8Array ? bufferSource(bytes) : bytes
  let thrown: unknown
  try {
    await parseGgufHeader(source, options)
  } catch (err) {
    thrown = err
  }
  expect(thrown, 'expected a refusal, the header was accepted').toBeInstanceOf(BkgError)
  return thrown as BkgError
}

async function expectRefused (bytes: Uint8Array | ByteSource, code: Code, message?: RegExp): Promise<BkgError> {
  const err = await refusal(bytes)
  expect(err.code, err.message).toBe(code)
  expect(err.status).toBe(422)
  if (message !== undefined) expect(err.message).toMatch(message)
  return err
}

const u32 = (value: number): GgufValue => ({ type: 'u32', value })
const str = (value: string): GgufValue => ({ type: 'string', value })
const f32Tensor = (name: string, dims: number[], extra: Partial<GgufTensorSpec> = {}): GgufTensorSpec =>
  ({ name, dims, type: 0, data: new Uint8Array(dims.reduce((a, b) => a * b, 1) * 4), ...extra })

/** a small valid file, edited by the case at hand */
function crafted (edit: Partial<GgufSpec> & { extra?: Array<[string, GgufValue]> } = {}): Buffer {
  return writeGguf({
    version: edit.version ?? 3,
    metadata: edit.metadata ?? [['general.architecture', str('llama')], ['general.alignment', u32(32)], ...(edit.extra ?? [])],
    tensors: edit.tensors ?? [f32Tensor('a.weight', [8, 2]), f32Tensor('b.weight', [3])]
  })
}

/** raw little-endian pieces, for headers the writer cannot express (lengths that lie) */
const le = {
  u32: (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b },
  u64: (v: bigint | number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b },
  str: (s: string) => Buffer.concat([le.u64(Buffer.byteLength(s)), Buffer.from(s)])
}
const preamble = (tensors: bigint | number, kvs: bigint | number): Buffer => Buffer.concat([Buffer.from('GGUF'), le.u32(3), le.u64(tensors), le.u64(kvs)])

/** a source that claims `size` bytes: `prefix`, then zeros; counts what was read */
function sparseSource (prefix: Buffer, size: number): ByteSource & { bytesRead: number } {
  const source = {
    size,
    bytesRead: 0,
    read: async (position: number, length: number) => {
      const bytes = new Uint8Array(Math.min(length, size - position))
      bytes.set(prefix.subarray(position, position + bytes.length))
      source.bytesRead += bytes.length
      return bytes
    }
  }
  return source
}

describe('GGUF header check', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  const model = testModelGguf({ weights: 'f16' })
  let headerEnd: number

  beforeAll(async () => {
    tmp = await tempDir('bkg-gguf-')
    headerEnd = (await parseGgufHeader(bufferSource(model))).dataOffset
  })

  afterAll(async () => {
    await tmp?.remove()
  })

  describe('the test model', () => {
    for (const weights of ['f32', 'f16'] as const) {
      it(`reads the facts of the ${weights} file`, async () => {
        const path = await writeTestModel(tmp.dir, { weights, fileName: `${weights}.gguf` })
        expect(await readGgufFacts(path)).toEqual({
          version: 3,
          architecture: 'llama',
          name: TEST_MODEL_FACTS.name,
          contextLength: 2048,
          embeddingLength: 64,
          blockCount: 2,
          vocabularySize: 258,
          tensorCount: 21,
          fileType: weights === 'f32' ? 0 : 1
        })
      })
    }

    it('states the data section and where the last tensor ends', async () => {
      const header = await parseGgufHeader(bufferSource(model))
      expect(header.alignment).toBe(32)
      expect(header.dataOffset % 32).toBe(0)
      expect(header.dataEnd).toBe(model.length)
      expect((await parseGgufHeader(bufferSource(testModelGguf({ contextLength: 512 })))).facts.contextLength).toBe(512)
    })

    it('takes the vocabulary size from the token list when the architecture key is absent', async () => {
      const bytes = crafted({ extra: [['tokenizer.ggml.tokens', { type: 'array', of: 'string', values: ['a', 'b', 'c'] }]] })
      expect((await parseGgufHeader(bufferSource(bytes))).facts).toMatchObject({ vocabularySize: 3, contextLength: null, name: null, fileType: null })
    })

    it('accepts GGUF v2, a file without tensors, and arrays of arrays', async () => {
      expect((await parseGgufHeader(bufferSource(crafted({ version: 2 })))).facts.version).toBe(2)
      expect((await parseGgufHeader(bufferSource(crafted({ tensors: [] })))).facts.tensorCount).toBe(0)
      const nested: GgufValue = { type: 'array', of: 'array', values: [{ type: 'array', of: 'u8', values: [1, 2] }, { type: 'array', of: 'string', values: ['x'] }] }
      expect((await parseGgufHeader(bufferSource(crafted({ extra: [['x.nested', nested]] })))).facts.architecture).toBe('llama')
    })
  })

  describe('truncation', () => {
    it('refuses every cut through the metadata and tensor infos as gguf_invalid', async () => {
      const cuts: number[] = []
      for (let n = 0; n < Math.min(512, headerEnd); n++) cuts.push(n)
      for (let n = 512; n <= headerEnd; n += 7) cuts.push(n)
      cuts.push(headerEnd - 1, headerEnd, headerEnd + 1, model.length - 1)
      for (const n of cuts) {
        const err = await refusal(model.subarray(0, n))
        expect(err.code, `cut at ${n}: ${err.message}`).toBe('gguf_invalid')
        expect(err.message).toMatch(/byte \d+/)
      }
    })
  })

  describe('mutated bytes', () => {
    it('either accepts or refuses with a GGUF code, never anything else', async () => {
      const position = fc.oneof(fc.nat(63), fc.nat(headerEnd - 1))
      const byte = fc.oneof(fc.constantFrom(0, 1, 0x7f, 0x80, 0xff), fc.integer({ min: 0, max: 255 }))
      await fc.assert(fc.asyncProperty(fc.array(fc.tuple(position, byte), { minLength: 1, maxLength: 6 }), async (mutations) => {
        const bytes = Buffer.from(model)
        for (const [at, value] of mutations) bytes[at] = value
        try {
          await parseGgufHeader(bufferSource(bytes))
        } catch (err) {
          expect(err).toBeInstanceOf(BkgError)
          expect(['gguf_invalid', 'gguf_unsupported']).toContain((err as BkgError).code)
        }
      }), { seed: 1313, numRuns: 400 })
    })
  })

  describe('huge counts and lengths', () => {
    // each is refused from its numbers, reading no more than the first chunk of the file
    const cases: Array<[string, Buffer, RegExp]> = [
      ['a tensor count beyond 2^53', preamble(2n ** 63n, 1), /tensor count at byte 8 .* beyond 2\^53/],
      ['a tensor count beyond 1e6', preamble(1_000_001, 1), /tensor count at byte 8 is 1000001/],
      ['a metadata count beyond 1e5', preamble(1, 100_001), /metadata count at byte 16 is 100001/],
      ['counts the bytes cannot hold', preamble(1_000_000, 100_000), /needs \d+ bytes but the file ends/],
      ['a key 2^62 bytes long', Buffer.concat([preamble(0, 1), le.u64(2n ** 62n)]), /key 0 at byte 24 is \d+/],
      ['a string value 2^52 bytes long', Buffer.concat([preamble(0, 1), le.str('general.name'), le.u32(8), le.u64(2n ** 52n)]), /value of "general.name"/],
      ['a string array of 2^50 entries', Buffer.concat([preamble(0, 1), le.str('tokenizer.ggml.tokens'), le.u32(9), le.u32(8), le.u64(2n ** 50n)]), /elements of array "tokenizer.ggml.tokens"/],
      ['a u64 array of 2^53-1 entries', Buffer.concat([preamble(0, 1), le.str('x'), le.u32(9), le.u32(10), le.u64(2n ** 53n - 1n)]), /elements of array "x"/],
      ['an array of 2^40 arrays', Buffer.concat([preamble(0, 1), le.str('x'), le.u32(9), le.u32(9), le.u64(2n ** 40n)]), /elements of array "x"/]
    ]
    for (const [what, bytes, message] of cases) {
      it(`refuses ${what}`, async () => {
        const source = sparseSource(Buffer.concat([bytes, Buffer.alloc(64)]), bytes.length + 64)
        await expectRefused(source, 'gguf_invalid', message)
        expect(source.bytesRead).toBeLessThanOrEqual(bytes.length + 64)
      })
    }

    it('refuses metadata that reaches past 64 MiB of a bigger file without reading it', async () => {
      // a token string of 65 MiB in a 100 GiB file: stepped over, never read, refused at the cap
      const bytes = Buffer.concat([preamble(0, 1), le.str('tokenizer.ggml.tokens'), le.u32(9), le.u32(8), le.u64(1), le.u64(65 * 1024 * 1024)])
      const source = sparseSource(bytes, 100 * 1024 ** 3)
      await expectRefused(source, 'gguf_unsupported', /string 0 of array "tokenizer.ggml.tokens" at byte \d+ reaches past the first 67108864 bytes/)
      expect(source.bytesRead).toBeLessThanOrEqual(1024 * 1024)
      expect(MAX_HEADER_BYTES).toBe(64 * 1024 * 1024)
    })

    it('refuses nesting beyond four levels of arrays', async () => {
      let value: GgufValue & { type: 'array' } = { type: 'array', of: 'u8', values: [1] }
      for (let i = 0; i < 4; i++) value = { type: 'array', of: 'array', values: [value] }
      await expectRefused(crafted({ extra: [['x.deep', value]] }), 'gguf_invalid', /nests arrays deeper than 4/)
    })
  })

  describe('what is not loaded', () => {
    it('refuses a big-endian file, naming it', async () => {
      const bytes = Buffer.from(model)
      bytes.writeUInt32BE(3, 4)
      await expectRefused(bytes, 'gguf_unsupported', /big-endian/)
    })

    it('refuses GGUF v1 and unknown versions', async () => {
      await expectRefused(crafted({ version: 1 }), 'gguf_unsupported', /version 1 .* only versions 2 and 3/)
      await expectRefused(crafted({ version: 4 }), 'gguf_unsupported', /version 4/)
    })

    it('refuses a tensor of an unknown ggml type', async () => {
      // 31 was Q4_0_4_4, removed from GGUF files
      await expectRefused(crafted({ tensors: [f32Tensor('a.weight', [8], { type: 31 })] }), 'gguf_unsupported', /tensor "a.weight" at byte \d+ has ggml type 31/)
      await expectRefused(crafted({ tensors: [f32Tensor('a.weight', [8], { type: 0xffffffff })] }), 'gguf_unsupported', /ggml type 4294967295/)
    })
  })

  describe('malformed headers', () => {
    const cases: Array<[string, () => Buffer, RegExp]> = [
      ['a wrong magic', () => Buffer.concat([Buffer.from('GGML'), crafted().subarray(4)]), /magic at byte 0 is 0x47474d4c/],
      ['a missing general.architecture', () => crafted({ metadata: [['general.name', str('x')]] }), /general.architecture is missing/],
      ['a numeric general.architecture', () => crafted({ metadata: [['general.architecture', u32(1)]] }), /general.architecture has value type 4, must be a string/],
      ['a duplicate key', () => crafted({ extra: [['general.architecture', str('llama')]] }), /key "general.architecture" at byte \d+ appears twice/],
      ['an empty key', () => crafted({ extra: [['', u32(1)]] }), /key 2 at byte \d+ is empty/],
      ['a key that is not UTF-8', () => { const b = crafted({ extra: [['x.\u00e9', u32(1)]] }); b[b.indexOf('x.\u00e9') + 2] = 0xff; return b }, /key 2 at byte \d+ is not valid UTF-8/],
      ['an unknown value type', () => { const b = crafted({ extra: [['x.y', u32(1)]] }); b.writeUInt32LE(13, b.indexOf('x.y') + 3); return b }, /key "x.y" at byte \d+ has value type 13/],
      ['an unknown array element type', () => { const b = crafted({ extra: [['x.y', { type: 'array', of: 'u8', values: [] }]] }); b.writeUInt32LE(99, b.indexOf('x.y') + 7); return b }, /array "x.y" at byte \d+ has value type 99/],
      ['an alignment that is not a power of two', () => crafted({ metadata: [['general.architecture', str('llama')], ['general.alignment', u32(48)]] }), /alignment is 48, not a power of two/],
      ['an alignment of 0', () => crafted({ metadata: [['general.architecture', str('llama')], ['general.alignment', u32(0)]] }), /alignment is 0/],
      ['an alignment that is not u32', () => crafted({ metadata: [['general.architecture', str('llama')], ['general.alignment', { type: 'u64', value: 32n }]] }), /alignment has value type 10, must be u32/],
      ['a tensor with no dimensions', () => crafted({ tensors: [f32Tensor('a.weight', [])] }), /tensor "a.weight" at byte \d+ has 0 dimensions/],
      ['a tensor with five dimensions', () => crafted({ tensors: [f32Tensor('a.weight', [1, 1, 1, 1, 1])] }), /has 5 dimensions/],
      ['a dimension of 0', () => crafted({ tensors: [f32Tensor('a.weight', [4, 0])] }), /dimension 1 at byte \d+ is 0/],
      ['more than 2^53 elements', () => crafted({ tensors: [{ name: 'a.weight', dims: [2 ** 27, 2 ** 27], type: 0, data: new Uint8Array(4) }] }), /more than 2\^53 elements/],
      ['a dimension beyond 2^53', () => crafted({ tensors: [{ name: 'a.weight', dims: [2n ** 60n], type: 0, data: new Uint8Array(4) }] }), /dimension 0 at byte \d+ is 1152921504606846976/],
      ['a row that is not a whole number of blocks', () => crafted({ tensors: [{ name: 'a.weight', dims: [16], type: 8, data: new Uint8Array(34) }] }), /rows of 16 elements, not a multiple of Q8_0's block of 32/],
      ['a duplicate tensor name', () => crafted({ tensors: [f32Tensor('a.weight', [8]), f32Tensor('a.weight', [8])] }), /tensor "a.weight" at byte \d+ appears twice/],
      ['a tensor name of 64 bytes', () => crafted({ tensors: [f32Tensor('x'.repeat(64), [8])] }), /name of tensor 0 at byte \d+ is 64 bytes long/],
      ['a misaligned data offset', () => crafted({ tensors: [f32Tensor('a.weight', [8], { offset: 4 })] }), /data offset 4 .* not a multiple of the alignment 32/],
      ['a tensor beyond the end of the file', () => crafted({ tensors: [f32Tensor('a.weight', [8], { offset: 1 << 20 })] }), /tensor "a.weight" \(info at byte \d+\) spans bytes \d+\.\.\d+ but the file ends at byte \d+/],
      ['a tensor whose declared size exceeds its data', () => crafted({ tensors: [{ name: 'a.weight', dims: [1 << 20], type: 0, data: new Uint8Array(32) }] }), /spans bytes/]
    ]
    for (const [what, bytes, message] of cases) {
      it(`refuses ${what}`, async () => {
        await expectRefused(bytes(), 'gguf_invalid', message)
      })
    }
  })
})
