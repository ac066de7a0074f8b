import { writeGguf, type GgufTensorSpec, type GgufValue } from './gguf-writer.ts'

/**
 * The project's own test model: a tiny llama-architecture GGUF v3 (two blocks, 64-wide, byte-level
 * vocabulary) with seeded random weights. No model hub is reachable from the machines that run the
 * tests and the devnet, so the model is made here; the same options always give the same bytes.
 *
 * The weights are random, but shaped so that generated text is printable ASCII: residual
 * dimension 0 carries a constant (token_embd sets it, no layer writes it), which turns column 0 of
 * output.weight into a per-token logit bias that rules out every token except printable ASCII and
 * newline. Without it greedy output is invalid UTF-8, useless for text and streaming tests. The
 * price: embeddings of different texts are alike (cosine around 0.9).
 */

export interface TestModelOptions {
  /** seeds the weights; default 42 */
  seed?: number
  /** `llama.context_length`; only the header changes with it. Default 2048 */
  contextLength?: number
  /** matrices as f32 (~470 KB) or f16 (~240 KB); norms are f32 in both. Default f16 */
  weights?: 'f32' | 'f16'
  /**
   * `tokenizer.chat_template`: ChatML by default, which node-llama-cpp recognizes and formats with
   * its ChatML wrapper; null leaves the key out, as in GGUFs made without one (node-llama-cpp then
   * falls back to its Llama2Chat wrapper for this architecture)
   */
  chatTemplate?: 'chatml' | null
}

export const TEST_MODEL_FACTS = {
  architecture: 'llama',
  name: 'bkg-tiny-llama',
  embeddingLength: 64,
  blockCount: 2,
  headCount: 4,
  feedForwardLength: 128,
  /** 256 bytes, then BOS and EOS */
  vocabularySize: 258,
  bos: 256,
  eos: 257,
  defaultContextLength: 2048
} as const

const F = TEST_MODEL_FACTS
const GGML_F32 = 0
const GGML_F16 = 1
/** constant carried in residual dimension 0, and the logit penalty on tokens that are not printable */
const CARRIER = 1
const PENALTY = 30

/**
 * GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others are moved to
 * U+0100 and up. With a "gpt2" tokenizer and no merges, every byte is then exactly one token and
 * detokenizing gives back the raw bytes.
 */
function byteTokens (): string[] {
  const tokens = new Array<string>(256)
  const printable = (b: number): boolean => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
  let shifted = 0
  for (let b = 0; b < 256; b++) tokens[b] = String.fromCodePoint(printable(b) ? b : 256 + shifted++)
  return tokens
}

/** mulberry32: small, seedable, the same on every platform */
function mulberry32 (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** the common ChatML template, as models that use ChatML ship it */
const CHATML_TEMPLATE = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

const allowedOutput = (token: number): boolean => (token >= 0x20 && token <= 0x7e) || token === 0x0a

interface TensorPlan {
  name: string
  dims: number[]
  init: 'ones' | 'random'
  /** applies the printable shaping to the freshly drawn weights */
  shape?: (w: Float32Array, dims: number[]) => void
}

function plan (): TensorPlan[] {
  const kvWidth = (F.embeddingLength / F.headCount) * F.headCount
  // output row 0 of the layers that write the residual stays 0, so the carrier survives
  const keepCarrier = (w: Float32Array, dims: number[]): void => { w.fill(0, 0, dims[0]) }
  const tensors: TensorPlan[] = [{
    name: 'token_embd.weight',
    dims: [F.embeddingLength, F.vocabularySize],
    init: 'random',
    shape: (w, [width, rows]) => { for (let v = 0; v < rows; v++) w[v * width] = CARRIER }
  }]
  for (let i = 0; i < F.blockCount; i++) {
    tensors.push(
      { name: `blk.${i}.attn_norm.weight`, dims: [F.embeddingLength], init: 'ones' },
      { name: `blk.${i}.attn_q.weight`, dims: [F.embeddingLength, F.embeddingLength], init: 'random' },
      { name: `blk.${i}.attn_k.weight`, dims: [F.embeddingLength, kvWidth], init: 'random' },
      { name: `blk.${i}.attn_v.weight`, dims: [F.embeddingLength, kvWidth], init: 'random' },
      { name: `blk.${i}.attn_output.weight`, dims: [F.embeddingLength, F.embeddingLength], init: 'random', shape: keepCarrier },
      { name: `blk.${i}.ffn_norm.weight`, dims: [F.embeddingLength], init: 'ones' },
      { name: `blk.${i}.ffn_gate.weight`, dims: [F.embeddingLength, F.feedForwardLength], init: 'random' },
      { name: `blk.${i}.ffn_up.weight`, dims: [F.embeddingLength, F.feedForwardLength], init: 'random' },
      { name: `blk.${i}.ffn_down.weight`, dims: [F.feedForwardLength, F.embeddingLength], init: 'random', shape: keepCarrier }
    )
  }
  tensors.push(
    { name: 'output_norm.weight', dims: [F.embeddingLength], init: 'ones' },
    {
      name: 'output.weight',
      dims: [F.embeddingLength, F.vocabularySize],
      init: 'random',
      shape: (w, [width, rows]) => { for (let v = 0; v < rows; v++) w[v * width] = allowedOutput(v) ? 0 : -PENALTY }
    }
  )
  return tensors
}

function encode (w: Float32Array, type: number): Uint8Array {
  const bytes = new Uint8Array(w.length * (type === GGML_F32 ? 4 : 2))
  const view = new DataView(bytes.buffer)
  for (let i = 0; i < w.length; i++) {
    if (type === GGML_F32) view.setFloat32(i * 4, w[i], true)
    else view.setFloat16(i * 2, w[i], true)
  }
  return bytes
}

function metadata (options: Required<TestModelOptions>): Array<[string, GgufValue]> {
  const u32 = (value: number): GgufValue => ({ type: 'u32', value })
  const tokens = [...byteTokens(), '<s>', '</s>']
  return [
    ['general.architecture', { type: 'string', value: F.architecture }],
    ['general.name', { type: 'string', value: F.name }],
    ['general.alignment', u32(32)],
    ['general.file_type', u32(options.weights === 'f32' ? 0 : 1)],
    // llama.cpp checks key types strictly; converters write these counts as u32
    ['llama.vocab_size', u32(F.vocabularySize)],
    ['llama.context_length', u32(options.contextLength)],
    ['llama.embedding_length', u32(F.embeddingLength)],
    ['llama.block_count', u32(F.blockCount)],
    ['llama.feed_forward_length', u32(F.feedForwardLength)],
    ['llama.attention.head_count', u32(F.headCount)],
    ['llama.attention.head_count_kv', u32(F.headCount)],
    ['llama.rope.dimension_count', u32(F.embeddingLength / F.headCount)],
    ['llama.rope.freq_base', { type: 'f32', value: 10000 }],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
    // "gpt2" (byte-level BPE) rather than "llama" (SentencePiece, which would escape spaces and need byte fallback tokens)
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    // without a pre-tokenizer name llama.cpp warns loudly that quality is degraded
    ['tokenizer.ggml.pre', { type: 'string', value: 'default' }],
    ['tokenizer.ggml.tokens', { type: 'array', of: 'string', values: tokens }],
    // 1 normal, 3 control
    ['tokenizer.ggml.token_type', { type: 'array', of: 'i32', values: tokens.map((_, i) => (i < 256 ? 1 : 3)) }],
    // llama.cpp requires the key for BPE; empty keeps every byte its own token
    ['tokenizer.ggml.merges', { type: 'array', of: 'string', values: [] }],
    ['tokenizer.ggml.bos_token_id', u32(F.bos)],
    ['tokenizer.ggml.eos_token_id', u32(F.eos)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
    ...(options.chatTemplate === 'chatml' ? [['tokenizer.chat_template', { type: 'string', value: CHATML_TEMPLATE }] satisfies [string, GgufValue]] : [])
  ]
}

/** The test model's GGUF bytes. */
export function testModelGguf (options: TestModelOptions = {}): Buffer {
  const resolved: Required<TestModelOptions> = {
    seed: options.seed ?? 42,
    contextLength: options.contextLength ?? F.defaultContextLength,
    weights: options.weights ?? 'f16',
    chatTemplate: options.chatTemplate === undefined ? 'chatml' : options.chatTemplate
  }
  if (!Number.isInteger(resolved.contextLength) || resolved.contextLength < 1 || resolved.contextLength > 0xffffffff) {
    throw new RangeError(`contextLength must be a positive u32, got ${resolved.contextLength}`)
  }
  const random = mulberry32(resolved.seed)
  const matrixType = resolved.weights === 'f32' ? GGML_F32 : GGML_F16
  const tensors: GgufTensorSpec[] = plan().map((tensor) => {
    const w = new Float32Array(tensor.dims.reduce((a, b) => a * b, 1))
    // uniform in ±1.7/sqrt(fan-in): activations neither vanish nor blow up through two blocks
    const scale = 1.7 / Math.sqrt(tensor.dims[0])
    for (let i = 0; i < w.length; i++) w[i] = tensor.init === 'ones' ? 1 : (random() * 2 - 1) * scale
    tensor.shape?.(w, tensor.dims)
    // 1-D norm weights stay f32: llama.cpp's CPU ops expect them so
    const type = tensor.dims.length === 1 ? GGML_F32 : matrixType
    return { name: tensor.name, dims: tensor.dims, type, data: encode(w, type) }
  })
  return writeGguf({ version: 3, metadata: metadata(resolved), tensors })
}
