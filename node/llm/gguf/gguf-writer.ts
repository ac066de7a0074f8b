import { FIXED_SIZE, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, ValueType, type ScalarTypeName } from './gguf-format.ts'

/**
 * A minimal GGUF (v2/v3, little-endian) writer: metadata, tensor infos, aligned tensor data. It
 * writes the project's test model and the crafted files the header check is tested with, so it
 * takes whatever it is given (any version number, any ggml type id) without judging it.
 */

export type GgufValue =
  | { type: ScalarTypeName, value: number | bigint | boolean }
  | { type: 'string', value: string }
  | { type: 'array', of: ScalarTypeName, values: Array<number | bigint | boolean> }
  | { type: 'array', of: 'string', values: string[] }
  | { type: 'array', of: 'array', values: Array<GgufValue & { type: 'array' }> }

export interface GgufTensorSpec {
  name: string
  /** ne0 (the row length) first */
  dims: Array<number | bigint>
  /** ggml type id */
  type: number
  data: Uint8Array
  /** overrides the computed data offset (crafted files only) */
  offset?: number | bigint
}

export interface GgufSpec {
  version?: number
  metadata: Array<[string, GgufValue]>
  tensors: GgufTensorSpec[]
}

class ByteSink {
  private readonly parts: Buffer[] = []
  length = 0

  push (bytes: Uint8Array): void {
    this.parts.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
    this.length += bytes.byteLength
  }

  fixed (type: number, value: number | bigint | boolean): void {
    const b = Buffer.alloc(FIXED_SIZE[type])
    switch (type) {
      case ValueType.u8: b.writeUInt8(Number(value)); break
      case ValueType.i8: b.writeInt8(Number(value)); break
      case ValueType.u16: b.writeUInt16LE(Number(value)); break
      case ValueType.i16: b.writeInt16LE(Number(value)); break
      case ValueType.u32: b.writeUInt32LE(Number(value)); break
      case ValueType.i32: b.writeInt32LE(Number(value)); break
      case ValueType.f32: b.writeFloatLE(Number(value)); break
      case ValueType.bool: b.writeUInt8(value === true ? 1 : 0); break
      case ValueType.u64: b.writeBigUInt64LE(BigInt(value)); break
      case ValueType.i64: b.writeBigInt64LE(BigInt(value)); break
      case ValueType.f64: b.writeDoubleLE(Number(value)); break
    }
    this.push(b)
  }

  u32 (value: number): void { this.fixed(ValueType.u32, value) }
  u64 (value: number | bigint): void { this.fixed(ValueType.u64, value) }

  string (value: string): void {
    const bytes = Buffer.from(value, 'utf8')
    this.u64(bytes.length)
    this.push(bytes)
  }

  padTo (alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment
    if (pad > 0) this.push(Buffer.alloc(pad))
  }

  bytes (): Buffer {
    return Buffer.concat(this.parts)
  }
}

const alignUp = (n: number, alignment: number): number => n + ((alignment - (n % alignment)) % alignment)

/** an array's element type, length and elements (no leading type: arrays of arrays nest this) */
function writeArrayBody (sink: ByteSink, value: GgufValue & { type: 'array' }): void {
  sink.u32(ValueType[value.of])
  sink.u64(value.values.length)
  for (const item of value.values) {
    if (value.of === 'string') sink.string(item as string)
    else if (value.of === 'array') writeArrayBody(sink, item as GgufValue & { type: 'array' })
    else sink.fixed(ValueType[value.of], item as number | bigint | boolean)
  }
}

function writeValue (sink: ByteSink, value: GgufValue): void {
  if (value.type === 'string') {
    sink.u32(ValueType.string)
    sink.string(value.value)
  } else if (value.type === 'array') {
    sink.u32(ValueType.array)
    writeArrayBody(sink, value)
  } else {
    sink.u32(ValueType[value.type])
    sink.fixed(ValueType[value.type], value.value)
  }
}

export function writeGguf (spec: GgufSpec): Buffer {
  const alignmentEntry = spec.metadata.find(([key]) => key === 'general.alignment')?.[1]
  const stated = alignmentEntry !== undefined && alignmentEntry.type !== 'string' && alignmentEntry.type !== 'array' ? Number(alignmentEntry.value) : NaN
  // a crafted file may state a nonsense alignment; the bytes are then laid out with the default
  const alignment = Number.isInteger(stated) && stated > 0 ? stated : GGUF_DEFAULT_ALIGNMENT
  const sink = new ByteSink()
  sink.push(Buffer.from(GGUF_MAGIC, 'ascii'))
  sink.u32(spec.version ?? 3)
  sink.u64(spec.tensors.length)
  sink.u64(spec.metadata.length)
  for (const [key, value] of spec.metadata) {
    sink.string(key)
    writeValue(sink, value)
  }
  let offset = 0
  for (const tensor of spec.tensors) {
    sink.string(tensor.name)
    sink.u32(tensor.dims.length)
    for (const dim of tensor.dims) sink.u64(dim)
    sink.u32(tensor.type)
    sink.u64(tensor.offset ?? offset)
    offset = alignUp(offset + tensor.data.byteLength, alignment)
  }
  sink.padTo(alignment)
  for (const tensor of spec.tensors) {
    sink.push(tensor.data)
    sink.padTo(alignment)
  }
  return sink.bytes()
}
