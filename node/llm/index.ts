/**
 * Local inference on signed models: node-llama-cpp runs GGUF files that arrived in verified `.bkg`
 * packages; a request runs here or, when this node lacks the model or is busy, on the best peer
 * that announces it (`/bkg/infer/1.0.0`). See docs/architecture.md (Inference) and docs/api.md.
 */
export type * from './types.ts'
export { llmService, LlmService, type LlmServiceComponents, type LlmServiceInit, type MeshInference } from './llm-service.ts'
export { LlmBusyError } from './local/fair-queue.ts'
export { readGgufFacts } from './gguf/gguf-header.ts'
export { testModelGguf, type TestModelOptions } from './gguf/test-model.ts'
export { peerMesh, type PeerMesh } from './peer/peer-mesh.ts'
export * as LLM_LIMITS from './limits.ts'
