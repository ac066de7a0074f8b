import { availableParallelism } from 'node:os'

/** Threads a context computes with unless configured: half the cores (1 on a 2-core machine), at most 4. */
export function defaultThreads (): number {
  return Math.max(1, Math.min(4, Math.floor(availableParallelism() / 2)))
}

export const LLM_DEFAULTS = {
  gpu: 'auto' as 'auto' | false,
  /** sequences of one model generating at once, batched together */
  parallel: 4,
  /** tokens per sequence (capped at the model's training context) */
  contextSize: 2048,
  /** requests waiting for a sequence, per model; one more is answered 429 */
  maxQueued: 16,
  /** a request for a held model that is not loaded loads it */
  autoLoad: true,
  /** models loaded at once; loading one more unloads the least recently used */
  maxLoaded: 2,
  /** how long a load with `pull` waits for the model to arrive */
  pullTimeoutMs: 10 * 60_000
}
