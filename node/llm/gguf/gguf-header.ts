import { open } from 'node:fs/promises'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { GgufFacts } from '../types.ts'
import { ggmlType } from './ggml-types.ts'
import { FIXED_SIZE, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, ValueType } from './gguf-format.ts'

/**
 * The JS check a GGUF file passes before llama.cpp's native loader sees it (layout: ggml-org/ggml
 * docs/gguf.md). The file is untrusted: it is read through bounded reads, only its metadata and
 * tensor infos (at most 64 MiB), every count and length is weighed against the bytes that are
 * left before anything is read or looped over, and big arrays (a vocabulary of 150k strings) are
 * stepped over without being materialized. Every refusal is a BkgError: `gguf_invalid` (malformed,
 * with the byte offset) or `gguf_unsupported` (well-formed but outside what this node loads).
 */

/** metadata + tensor infos are read up to this; beyond is refused rather than read */
export const MAX_HEADER_BYTES = 64 * 1024 * 1024
export const MAX_TENSORS = 1_000_000
export const MAX_KVS = 100_000
const MAX_KEY_BYTES = 65_535
/** the strings whose text is kept (architecture, name) */
const MAX_KEPT_STRING_BYTES = 65_535
/** ggml's GGML_MAX_NAME (64) includes the terminating NUL */
const MAX_TENSOR_NAME_BYTES = 63
const MAX_DIMS = 4
/** arrays of arrays: the spec allows them, nothing real goes deeper than this */
const MAX_ARRAY_DEPTH = 4
const MAX_SAFE = Number.MAX_SAFE_INTEGER
const READ_CHUNK = 1024 * 1024
/** smallest encodings: a KV is key length + 1 key byte + type + 1 value byte; a tensor info is name length + 1 byte + n_dims + 1 dim + type + offset */
const MIN_KV_BYTES = 8 + 1 + 4 + 1
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8

/** Random access to the file's bytes: `read` returns `length` bytes, or fewer only at the end. */
export interface ByteSource {
  size: number
  read: (position: number, length: number) => Promise<Uint8Array>
}

export interface GgufHeader {
  facts: GgufFacts
  alignment: number
  /** where the tensor data section starts (the aligned end of the tensor infos) */
  dataOffset: number
  /** end of the last tensor's bytes (absolute); 0 without tensors */
  dataEnd: number
}

export function bufferSource (bytes: Uint8Array): ByteSource {
  return {
    size: bytes.byteLength,
    read: async (position, length) => bytes.subarray(position, Math.min(bytes.byteLength, position + length))
  }
}

const invalid = (message: string): BkgError => new BkgError('gguf_invalid', 422, `invalid GGUF file: ${message}`)
const unsupported = (message: string): BkgError => new BkgError('gguf_unsupported', 422, `unsupported GGUF file: ${message}`)
const utf8 = new TextDecoder('utf-8', { fatal: true })
/** a key or tensor name as messages quote it: it comes from the file, so escaped and cut short */
const show = (text: string): string => JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text)

/** A forward reader over a window of the source; never reads past `limit`. */
class Cursor {
  pos = 0
  private window: Uint8Array = new Uint8Array(0)
  private view: DataView = new DataView(this.window.buffer)
  private windowStart = 0
  private readonly source: ByteSource
  private readonly limit: number

  constructor (source: ByteSource, maxHeaderBytes: number) {
    this.source = source
    this.limit = Math.min(source.size, maxHeaderBytes)
  }

  /** bytes left before the limit */
  get left (): number {
    return this.limit - this.pos
  }

  has (n: number): boolean {
    return this.pos >= this.windowStart && this.pos + n <= this.windowStart + this.window.byteLength
  }

  /** makes the next `n` bytes readable */
  async need (n: number, what: string): Promise<void> {
    if (this.has(n)) return
    this.check(n, what)
    const length = Math.min(Math.max(n, READ_CHUNK), this.limit - this.pos)
    const bytes = await this.source.read(this.pos, length)
    if (bytes.byteLength < n) throw invalid(`the file ends at byte ${this.pos + bytes.byteLength}, inside ${what} at byte ${this.pos}`)
    this.window = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.windowStart = this.pos
  }

  /** refuses unless `n` more bytes are within the limit */
  check (n: number, what: string): void {
    if (n <= this.left) return
    if (this.pos + n > this.source.size) {
      throw invalid(`${what} at byte ${this.pos} needs ${n} bytes but the file ends at byte ${this.source.size}`)
    }
    throw unsupported(`${what} at byte ${this.pos} reaches past the first ${this.limit} bytes, more metadata than this node reads`)
  }

  skip (n: number, what: string): void {
    this.check(n, what)
    this.pos += n
  }

  private at (): number {
    return this.pos - this.windowStart
  }

  u32 (): number {
    const value = this.view.getUint32(this.at(), true)
    this.pos += 4
    return value
  }

  u64 (): bigint {
    const value = this.view.getBigUint64(this.at(), true)
    this.pos += 8
    return value
  }

  bytes (n: number): Uint8Array {
    const start = this.at()
    this.pos += n
    return this.window.subarray(start, start + n)
  }

  /** a fixed-size value as a number (u64/i64 as bigint) */
  fixed (type: number): number | bigint {
    const at = this.at()
    this.pos += FIXED_SIZE[type]
    switch (type) {
      case ValueType.u8: case ValueType.bool: return this.view.getUint8(at)
      case ValueType.i8: return this.view.getInt8(at)
      case ValueType.u16: return this.view.getUint16(at, true)
      case ValueType.i16: return this.view.getInt16(at, true)
      case ValueType.u32: return this.view.getUint32(at, true)
      case ValueType.i32: return this.view.getInt32(at, true)
      case ValueType.f32: return this.view.getFloat32(at, true)
      case ValueType.u64: return this.view.getBigUint64(at, true)
      case ValueType.i64: return this.view.getBigInt64(at, true)
      default: return this.view.getFloat64(at, true)
    }
  }
}

async function readU32 (c: Cursor, what: string): Promise<number> {
  await c.need(4, what)
  return c.u32()
}

/** a u64 that must fit a JS number (counts, lengths, offsets: nothing real comes near 2^53) */
async function readCount (c: Cursor, what: string): Promise<number> {
  const at = c.pos
  await c.need(8, what)
  const value = c.u64()
  if (value > BigInt(MAX_SAFE)) throw invalid(`${what} at byte ${at} is ${value}, beyond 2^53`)
  return Number(value)
}

/** a length-prefixed string whose text is kept: bounded, and valid UTF-8 */
async function readText (c: Cursor, what: string, maxBytes: number): Promise<string> {
  const at = c.pos
  const length = await readCount(c, `length of ${what}`)
  if (length > maxBytes) throw invalid(`${what} at byte ${at} is ${length} bytes long (at most ${maxBytes})`)
  c.check(length, what)
  await c.need(length, what)
  try {
    return utf8.decode(c.bytes(length))
  } catch {
    throw invalid(`${what} at byte ${at} is not valid UTF-8`)
  }
}

async function skipString (c: Cursor, what: string): Promise<void> {
  const length = await readCount(c, `length of ${what}`)
  c.skip(length, what)
}

function checkValueType (type: number, what: string, at: number): void {
  if (!Number.isInteger(type) || type < 0 || type > ValueType.f64) throw invalid(`${what} at byte ${at} has value type ${type} (known: 0..12)`)
}

/** steps over `count` elements of `type` without keeping them */
async function skipArray (c: Cursor, type: number, count: number, depth: number, what: string): Promise<void> {
  if (type !== ValueType.string && type !== ValueType.array) {
    c.skip(count * FIXED_SIZE[type], `${count} elements of ${what}`)
    return
  }
  // every element takes at least its length prefix: refuse a count the bytes cannot hold before looping
  const least = type === ValueType.string ? 8 : 12
  c.check(count * least, `${count} elements of ${what}`)
  if (type === ValueType.string) {
    for (let i = 0; i < count; i++) {
      let length: number
      if (c.has(8)) {
        const value = c.u64()
        if (value > BigInt(MAX_SAFE)) throw invalid(`string ${i} of ${what} at byte ${c.pos - 8} is ${value} bytes long`)
        length = Number(value)
      } else {
        length = await readCount(c, `length of string ${i} of ${what}`)
      }
      // the message is built only on refusal: this loop runs once per vocabulary entry
      if (length <= c.left) c.pos += length
      else c.skip(length, `string ${i} of ${what}`)
    }
    return
  }
  if (depth >= MAX_ARRAY_DEPTH) throw invalid(`${what} at byte ${c.pos} nests arrays deeper than ${MAX_ARRAY_DEPTH}`)
  for (let i = 0; i < count; i++) {
    const at = c.pos
    const inner = await readU32(c, `element type of array ${i} of ${what}`)
    checkValueType(inner, `array ${i} of ${what}`, at)
    const n = await readCount(c, `length of array ${i} of ${what}`)
    await skipArray(c, inner, n, depth + 1, `array ${i} of ${what}`)
  }
}

interface Metadata {
  /** integer scalars by key, with their value type */
  integers: Map<string, { type: number, value: number | bigint }>
  strings: Map<string, string>
  /** keys whose value is not of the kind read above: for "must be a string/u32" messages */
  types: Map<string, number>
  tokenCount: number | null
}

/** string values whose text the facts need */
const KEPT_STRINGS = new Set(['general.architecture', 'general.name'])
const INTEGER_TYPES = new Set<number>([ValueType.u8, ValueType.i8, ValueType.u16, ValueType.i16, ValueType.u32, ValueType.i32, ValueType.u64, ValueType.i64])

async function readMetadata (c: Cursor, count: number): Promise<Metadata> {
  const meta: Metadata = { integers: new Map(), strings: new Map(), types: new Map(), tokenCount: null }
  for (let i = 0; i < count; i++) {
    const at = c.pos
    const key = await readText(c, `key ${i}`, MAX_KEY_BYTES)
    if (key.length === 0) throw invalid(`key ${i} at byte ${at} is empty`)
    const k = show(key)
    if (meta.types.has(key)) throw invalid(`key ${k} at byte ${at} appears twice`)
    const typeAt = c.pos
    const type = await readU32(c, `value type of ${k}`)
    checkValueType(type, `key ${k}`, typeAt)
    meta.types.set(key, type)
    if (type === ValueType.array) {
      const elementAt = c.pos
      const element = await readU32(c, `element type of ${k}`)
      checkValueType(element, `array ${k}`, elementAt)
      const n = await readCount(c, `length of array ${k}`)
      if (key === 'tokenizer.ggml.tokens' && element === ValueType.string) meta.tokenCount = n
      await skipArray(c, element, n, 1, `array ${k}`)
    } else if (type === ValueType.string) {
      if (KEPT_STRINGS.has(key)) meta.strings.set(key, await readText(c, `value of ${k}`, MAX_KEPT_STRING_BYTES))
      else await skipString(c, `value of ${k}`)
    } else {
      await c.need(FIXED_SIZE[type], `value of ${k}`)
      const value = c.fixed(type)
      if (INTEGER_TYPES.has(type)) meta.integers.set(key, { type, value })
    }
  }
  return meta
}

function integerFact (meta: Metadata, key: string): number | null {
  const entry = meta.integers.get(key)
  if (entry === undefined) return null
  const value = BigInt(entry.value)
  return value >= 0n && value <= BigInt(MAX_SAFE) ? Number(value) : null
}

function alignmentOf (meta: Metadata): number {
  const type = meta.types.get('general.alignment')
  if (type === undefined) return GGUF_DEFAULT_ALIGNMENT
  if (type !== ValueType.u32) throw invalid(`general.alignment has value type ${type}, must be u32 (4)`)
  const alignment = Number(meta.integers.get('general.alignment')?.value)
  if (alignment === 0 || (alignment & (alignment - 1)) !== 0) throw invalid(`general.alignment is ${alignment}, not a power of two`)
  return alignment
}

interface TensorExtent {
  name: string
  infoAt: number
  offset: number
  bytes: number
}

async function readTensorInfo (c: Cursor, i: number, alignment: number, names: Set<string>): Promise<TensorExtent> {
  const infoAt = c.pos
  const name = await readText(c, `name of tensor ${i}`, MAX_TENSOR_NAME_BYTES)
  const shown = show(name)
  if (names.has(name)) throw invalid(`tensor ${shown} at byte ${infoAt} appears twice`)
  names.add(name)
  const dimsAt = c.pos
  const nDims = await readU32(c, `n_dims of tensor ${shown}`)
  if (nDims < 1 || nDims > MAX_DIMS) throw invalid(`tensor ${shown} at byte ${dimsAt} has ${nDims} dimensions (1..${MAX_DIMS})`)
  const dims: number[] = []
  let elements = 1
  for (let d = 0; d < nDims; d++) {
    const at = c.pos
    await c.need(8, `dimension ${d} of tensor ${shown}`)
    const dim = c.u64()
    if (dim < 1n || dim > BigInt(MAX_SAFE)) throw invalid(`tensor ${shown} dimension ${d} at byte ${at} is ${dim} (1..2^53)`)
    dims.push(Number(dim))
    elements *= Number(dim)
    if (elements > MAX_SAFE) throw invalid(`tensor ${shown} at byte ${infoAt} has more than 2^53 elements`)
  }
  const typeAt = c.pos
  const typeId = await readU32(c, `ggml type of tensor ${shown}`)
  const type = ggmlType(typeId)
  if (type === undefined) throw unsupported(`tensor ${shown} at byte ${typeAt} has ggml type ${typeId}, which this node does not know`)
  if (dims[0] % type.blockSize !== 0) {
    throw invalid(`tensor ${shown} at byte ${infoAt} has rows of ${dims[0]} elements, not a multiple of ${type.name}'s block of ${type.blockSize}`)
  }
  const offsetAt = c.pos
  const offset = await readCount(c, `data offset of tensor ${shown}`)
  if (offset % alignment !== 0) throw invalid(`tensor ${shown} has data offset ${offset} (at byte ${offsetAt}), not a multiple of the alignment ${alignment}`)
  return { name: shown, infoAt, offset, bytes: (elements / type.blockSize) * type.blockBytes }
}

/** Checks a GGUF header read from `source` and returns what it states. */
export async function parseGgufHeader (source: ByteSource, options: { maxHeaderBytes?: number } = {}): Promise<GgufHeader> {
  const c = new Cursor(source, options.maxHeaderBytes ?? MAX_HEADER_BYTES)
  await c.need(4, 'the magic')
  const magic = c.bytes(4)
  if (Buffer.from(magic).toString('latin1') !== GGUF_MAGIC) {
    throw invalid(`not a GGUF file: the magic at byte 0 is 0x${Buffer.from(magic).toString('hex')}, not "GGUF"`)
  }
  const version = await readU32(c, 'the version')
  if (version !== 2 && version !== 3) {
    const swapped = ((version & 0xff) << 24 | (version & 0xff00) << 8 | (version >>> 8) & 0xff00 | version >>> 24) >>> 0
    if (swapped >= 1 && swapped <= 3) throw unsupported(`the version at byte 4 reads as ${swapped} big-endian: a big-endian file, and only little-endian GGUF is loaded`)
    if (version === 1) throw unsupported('GGUF version 1 (at byte 4) is not loaded: only versions 2 and 3 are')
    throw unsupported(`GGUF version ${version} (at byte 4) is not loaded: only versions 2 and 3 are`)
  }
  const tensorCount = await readCount(c, 'the tensor count')
  if (tensorCount > MAX_TENSORS) throw invalid(`the tensor count at byte 8 is ${tensorCount} (at most ${MAX_TENSORS})`)
  const kvCount = await readCount(c, 'the metadata count')
  if (kvCount > MAX_KVS) throw invalid(`the metadata count at byte 16 is ${kvCount} (at most ${MAX_KVS})`)
  c.check(kvCount * MIN_KV_BYTES + tensorCount * MIN_TENSOR_INFO_BYTES, `${kvCount} key-value pairs and ${tensorCount} tensor infos`)

  const meta = await readMetadata(c, kvCount)
  const architectureType = meta.types.get('general.architecture')
  if (architectureType === undefined) throw invalid('general.architecture is missing')
  const architecture = meta.strings.get('general.architecture')
  if (architecture === undefined) throw invalid(`general.architecture has value type ${architectureType}, must be a string`)
  if (architecture.length === 0) throw invalid('general.architecture is empty')
  const alignment = alignmentOf(meta)

  const names = new Set<string>()
  const extents: TensorExtent[] = []
  for (let i = 0; i < tensorCount; i++) extents.push(await readTensorInfo(c, i, alignment, names))
  const dataOffset = Math.ceil(c.pos / alignment) * alignment
  let dataEnd = 0
  for (const tensor of extents) {
    const start = dataOffset + tensor.offset
    const end = start + tensor.bytes
    if (end > source.size) {
      throw invalid(`tensor ${tensor.name} (info at byte ${tensor.infoAt}) spans bytes ${start}..${end} but the file ends at byte ${source.size}`)
    }
    dataEnd = Math.max(dataEnd, end)
  }

  return {
    facts: {
      version,
      architecture,
      name: meta.strings.get('general.name') ?? null,
      contextLength: integerFact(meta, `${architecture}.context_length`),
      embeddingLength: integerFact(meta, `${architecture}.embedding_length`),
      blockCount: integerFact(meta, `${architecture}.block_count`),
      vocabularySize: integerFact(meta, `${architecture}.vocab_size`) ?? meta.tokenCount,
      tensorCount,
      fileType: integerFact(meta, 'general.file_type')
    },
    alignment,
    dataOffset,
    dataEnd
  }
}

/** parseGgufHeader over a file, read through a handle in bounded chunks */
export async function readGgufHeader (path: string, options: { maxHeaderBytes?: number } = {}): Promise<GgufHeader> {
  const handle = await open(path, 'r')
  try {
    const { size } = await handle.stat()
    return await parseGgufHeader({
      size,
      read: async (position, length) => {
        const buffer = Buffer.alloc(Math.max(0, Math.min(length, size - position)))
        let filled = 0
        while (filled < buffer.length) {
          const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, position + filled)
          if (bytesRead === 0) break
          filled += bytesRead
        }
        return buffer.subarray(0, filled)
      }
    }, options)
  } finally {
    await handle.close()
  }
}

/** The facts of a GGUF file, after its header passed the checks above. */
export async function readGgufFacts (path: string): Promise<GgufFacts> {
  return (await readGgufHeader(path)).facts
}
