import { z } from 'zod'
import { BkgError } from '../../lib/bkg-error.ts'
import {
  DEFAULT_MEMORY_BYTES, DEFAULT_OUTPUT_BYTES, DEFAULT_TIMEOUT_MS, MAX_MEMORY_BYTES, MAX_OUTPUT_BYTES, MAX_TIMEOUT_MS, MIN_MEMORY_BYTES
} from './constants.ts'
import type { SandboxPolicy } from './types.ts'

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/

/** What a client may ask for; absent fields take the node's defaults. */
export const PolicyInput = z.object({
  timeoutMs: z.number().int().min(1).max(MAX_TIMEOUT_MS).optional(),
  memoryBytes: z.number().int().min(MIN_MEMORY_BYTES).max(MAX_MEMORY_BYTES).optional(),
  outputBytes: z.number().int().min(1).max(MAX_OUTPUT_BYTES).optional(),
  env: z.record(z.string().regex(ENV_NAME, 'environment variable names are letters, digits and _'), z.string().max(4096))
    .refine((env) => Object.keys(env).length <= 64, 'at most 64 environment variables')
    .optional()
}).strict()
export type PolicyInput = z.infer<typeof PolicyInput>

export interface PolicyLimits {
  defaults: Omit<SandboxPolicy, 'env'>
  ceilings: Omit<SandboxPolicy, 'env'>
}

export const NODE_POLICY_LIMITS: PolicyLimits = {
  defaults: { timeoutMs: DEFAULT_TIMEOUT_MS, memoryBytes: DEFAULT_MEMORY_BYTES, outputBytes: DEFAULT_OUTPUT_BYTES },
  ceilings: { timeoutMs: MAX_TIMEOUT_MS, memoryBytes: MAX_MEMORY_BYTES, outputBytes: MAX_OUTPUT_BYTES }
}

/**
 * A sandbox's policy from what the client asked for: validated, defaults filled in, and refused
 * (400 invalid_policy) where it asks for more than this node allows.
 */
export function resolvePolicy (input: unknown, limits: PolicyLimits = NODE_POLICY_LIMITS): SandboxPolicy {
  const parsed = PolicyInput.safeParse(input ?? {})
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new BkgError('invalid_policy', 400, `policy${issue.path.length > 0 ? '.' + issue.path.join('.') : ''}: ${issue.message}`)
  }
  const policy: SandboxPolicy = {
    timeoutMs: parsed.data.timeoutMs ?? limits.defaults.timeoutMs,
    memoryBytes: parsed.data.memoryBytes ?? limits.defaults.memoryBytes,
    outputBytes: parsed.data.outputBytes ?? limits.defaults.outputBytes,
    env: parsed.data.env ?? {}
  }
  for (const key of ['timeoutMs', 'memoryBytes', 'outputBytes'] as const) {
    if (policy[key] > limits.ceilings[key]) throw new BkgError('invalid_policy', 400, `policy.${key}: ${policy[key]} is above this node's limit of ${limits.ceilings[key]}`)
  }
  return policy
}
