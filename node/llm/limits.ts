/**
 * The bounds of an inference request as the HTTP API and MCP take it, so a call one refuses the
 * other refuses too. (Frames between peers have their own, in protocols/infer.ts.)
 */
export const MAX_MESSAGES = 1024
/** characters of one message, prompt or embedding input */
export const MAX_TEXT = 4 * 1024 * 1024
export const MAX_TOOLS = 128
export const MAX_STOP = 16
export const MAX_EMBED_INPUTS = 2048
/** max_tokens, and the token ids a detokenize takes */
export const MAX_TOKENS_IN = 1_000_000
