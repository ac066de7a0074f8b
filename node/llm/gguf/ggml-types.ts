/**
 * ggml tensor types a GGUF file may name: how many elements one block holds and how many bytes it
 * takes, as ggml-org/llama.cpp gguf-py `GGML_QUANT_SIZES` states them. The header check needs them
 * to know each tensor's size; a type missing here is refused (`gguf_unsupported`) rather than
 * guessed, so the native loader never sees a size the JS side could not check.
 */

export interface GgmlType {
  name: string
  /** elements per block (a row length must be a multiple of it) */
  blockSize: number
  /** bytes per block */
  blockBytes: number
}

/** super-block size of the K and IQ quantizations */
const QK_K = 256

const TYPES: ReadonlyMap<number, GgmlType> = new Map([
  [0, { name: 'F32', blockSize: 1, blockBytes: 4 }],
  [1, { name: 'F16', blockSize: 1, blockBytes: 2 }],
  [2, { name: 'Q4_0', blockSize: 32, blockBytes: 2 + 16 }],
  [3, { name: 'Q4_1', blockSize: 32, blockBytes: 2 + 2 + 16 }],
  [6, { name: 'Q5_0', blockSize: 32, blockBytes: 2 + 4 + 16 }],
  [7, { name: 'Q5_1', blockSize: 32, blockBytes: 2 + 2 + 4 + 16 }],
  [8, { name: 'Q8_0', blockSize: 32, blockBytes: 2 + 32 }],
  [9, { name: 'Q8_1', blockSize: 32, blockBytes: 4 + 4 + 32 }],
  [10, { name: 'Q2_K', blockSize: QK_K, blockBytes: 2 + 2 + QK_K / 16 + QK_K / 4 }],
  [11, { name: 'Q3_K', blockSize: QK_K, blockBytes: 2 + QK_K / 4 + QK_K / 8 + 12 }],
  [12, { name: 'Q4_K', blockSize: QK_K, blockBytes: 2 + 2 + QK_K / 2 + 12 }],
  [13, { name: 'Q5_K', blockSize: QK_K, blockBytes: 2 + 2 + QK_K / 2 + QK_K / 8 + 12 }],
  [14, { name: 'Q6_K', blockSize: QK_K, blockBytes: 2 + QK_K / 2 + QK_K / 4 + QK_K / 16 }],
  [15, { name: 'Q8_K', blockSize: QK_K, blockBytes: 4 + QK_K + QK_K / 8 }],
  [16, { name: 'IQ2_XXS', blockSize: QK_K, blockBytes: 2 + QK_K / 4 }],
  [17, { name: 'IQ2_XS', blockSize: QK_K, blockBytes: 2 + QK_K / 4 + QK_K / 32 }],
  [18, { name: 'IQ3_XXS', blockSize: QK_K, blockBytes: 2 + QK_K / 4 + QK_K / 8 }],
  [19, { name: 'IQ1_S', blockSize: QK_K, blockBytes: 2 + QK_K / 8 + QK_K / 16 }],
  [20, { name: 'IQ4_NL', blockSize: 32, blockBytes: 2 + 16 }],
  [21, { name: 'IQ3_S', blockSize: QK_K, blockBytes: 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4 }],
  [22, { name: 'IQ2_S', blockSize: QK_K, blockBytes: 2 + QK_K / 4 + QK_K / 16 }],
  [23, { name: 'IQ4_XS', blockSize: QK_K, blockBytes: 2 + 2 + QK_K / 2 + QK_K / 64 }],
  [24, { name: 'I8', blockSize: 1, blockBytes: 1 }],
  [25, { name: 'I16', blockSize: 1, blockBytes: 2 }],
  [26, { name: 'I32', blockSize: 1, blockBytes: 4 }],
  [27, { name: 'I64', blockSize: 1, blockBytes: 8 }],
  [28, { name: 'F64', blockSize: 1, blockBytes: 8 }],
  [29, { name: 'IQ1_M', blockSize: QK_K, blockBytes: QK_K / 8 + QK_K / 16 + QK_K / 32 }],
  [30, { name: 'BF16', blockSize: 1, blockBytes: 2 }],
  [34, { name: 'TQ1_0', blockSize: QK_K, blockBytes: 2 + 4 * 13 }],
  [35, { name: 'TQ2_0', blockSize: QK_K, blockBytes: 2 + 64 }],
  [39, { name: 'MXFP4', blockSize: 32, blockBytes: 1 + 16 }]
])

export function ggmlType (id: number): GgmlType | undefined {
  return TYPES.get(id)
}
