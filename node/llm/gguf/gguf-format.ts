/**
 * The fixed parts of the GGUF layout (ggml-org/ggml docs/gguf.md), shared by the header check and
 * the writer: the magic, the metadata value types and their sizes, the default alignment.
 */

export const GGUF_MAGIC = 'GGUF'
export const GGUF_DEFAULT_ALIGNMENT = 32

export const ValueType = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12
} as const

export type ScalarTypeName = Exclude<keyof typeof ValueType, 'string' | 'array'>

/** bytes of one value of each fixed-size type; strings and arrays are sized by their length prefix */
export const FIXED_SIZE: Readonly<Record<number, number>> = {
  [ValueType.u8]: 1,
  [ValueType.i8]: 1,
  [ValueType.u16]: 2,
  [ValueType.i16]: 2,
  [ValueType.u32]: 4,
  [ValueType.i32]: 4,
  [ValueType.f32]: 4,
  [ValueType.bool]: 1,
  [ValueType.u64]: 8,
  [ValueType.i64]: 8,
  [ValueType.f64]: 8
}
