import type { LlamaContextSequence, LlamaGrammar, LlamaModel, Token } from 'node-llama-cpp'
import type { FinishReason, SamplingOptions } from '../types.ts'
import { StopStrings } from './stop-strings.ts'

export interface GenerationInput {
  sequence: LlamaContextSequence
  model: LlamaModel
  /** the whole prompt; the sequence may already hold a prefix of it (the prompt cache) */
  prompt: Token[]
  sampling: SamplingOptions
  maxTokens: number
  stopStrings: string[]
  /** tokens that end generation (the chat template's end-of-turn) besides the model's end-of-generation */
  stopTokens: ReadonlySet<Token>
  grammar: LlamaGrammar | null
  /** reuse what the sequence holds when it starts with the same tokens (never for deterministic requests) */
  reusePrefix: boolean
  signal?: AbortSignal
}

export interface GenerationEnd {
  finishReason: FinishReason
  completionTokens: number
  /** the whole generated text (what was streamed) */
  text: string
}

/**
 * Generates token by token from a sequence, as a pull-based stream of text pieces: the next token
 * is computed only when the consumer asks for the next piece, so a consumer that stops reading
 * stops generation, and one that returns ends it at once (within the token being computed).
 */
export async function * generate (input: GenerationInput): AsyncGenerator<{ text: string, tokens: number }, GenerationEnd> {
  const { sequence, model, prompt, sampling } = input
  const { LlamaGrammarEvaluationState } = await import('node-llama-cpp')
  const reused = input.reusePrefix ? await keepCommonPrefix(sequence, prompt) : await clear(sequence)
  const stops = new StopStrings(input.stopStrings)
  const generated: Token[] = []
  let pending: Token[] = []
  let text = ''
  let finishReason: FinishReason = 'length'
  let stoppedByString = false
  const tokens = sequence.evaluate(prompt.slice(reused), {
    temperature: sampling.temperature ?? 0.8,
    topK: sampling.topK ?? 40,
    topP: sampling.topP ?? 0.95,
    minP: sampling.minP ?? 0.05,
    // llama.cpp's sampler takes a uint32 seed: any integer a peer sends maps into it
    seed: sampling.seed == null ? undefined : sampling.seed >>> 0,
    grammarEvaluationState: input.grammar != null ? new LlamaGrammarEvaluationState({ model, grammar: input.grammar }) : undefined
  })
  try {
    while (generated.length < input.maxTokens) {
      if (input.signal?.aborted === true) {
        finishReason = 'cancelled'
        break
      }
      const next = await tokens.next()
      if (next.done === true) {
        finishReason = 'stop'
        break
      }
      const token = next.value
      if (input.stopTokens.has(token)) {
        finishReason = 'stop'
        break
      }
      generated.push(token)
      pending.push(token)
      const before = generated.length - pending.length
      const piece = model.detokenize(pending, false, generated.slice(Math.max(0, before - 8), before))
      // a multi-byte character split across tokens: wait for the rest (at most 4 bytes)
      if (piece.endsWith('\uFFFD') && pending.length < 4) continue
      const count = pending.length
      pending = []
      const { text: safe, stopped } = stops.push(piece)
      if (safe.length > 0) {
        text += safe
        yield { text: safe, tokens: count }
      }
      if (stopped) {
        finishReason = 'stop'
        stoppedByString = true
        break
      }
    }
  } finally {
    await tokens.return()
  }
  const tail = stoppedByString ? '' : stops.flush() + (pending.length > 0 ? model.detokenize(pending, false) : '')
  if (tail.length > 0) {
    text += tail
    yield { text: tail, tokens: pending.length }
  }
  return { finishReason, completionTokens: generated.length, text }
}

/** Keeps the longest prefix the sequence shares with the prompt and drops the rest; returns its length. */
async function keepCommonPrefix (sequence: LlamaContextSequence, prompt: Token[]): Promise<number> {
  const held = sequence.contextTokens
  let common = 0
  while (common < held.length && common < prompt.length && held[common] === prompt[common]) common++
  // the last prompt token is always evaluated again: its logits choose the first new token
  if (common >= prompt.length) common = prompt.length - 1
  if (common <= 0) return await clear(sequence)
  if (common < sequence.nextTokenIndex) await sequence.eraseContextTokenRanges([{ start: common, end: sequence.nextTokenIndex }])
  return common
}

async function clear (sequence: LlamaContextSequence): Promise<number> {
  if (sequence.nextTokenIndex > 0) await sequence.clearHistory()
  return 0
}
