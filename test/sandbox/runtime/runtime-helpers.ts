import { sandboxRuntime } from '../../../node/sandbox/runtime/index.ts'
import type { OutputChunk, RunLimits, SandboxRuntime, SandboxRuntimeInit } from '../../../node/sandbox/runtime/index.ts'

export const MiB = 1024 * 1024
export const limits: RunLimits = { timeoutMs: 2000, memoryBytes: 64 * MiB, outputBytes: MiB }

const quiet = { debug () {}, info () {}, warn () {}, error () {} }

export async function startRuntime (init: SandboxRuntimeInit = {}): Promise<SandboxRuntime> {
  const runtime = sandboxRuntime(init)({ log: quiet })
  await runtime.start()
  return runtime
}

export const text = (value: string): Uint8Array => new TextEncoder().encode(value)
export const decode = (bytes: Uint8Array | undefined): string => new TextDecoder().decode(bytes)

/** collects streamed output with the time each chunk came */
export function recorder (): { chunks: Array<{ stream: OutputChunk['stream'], text: string, at: number }>, onOutput: (chunk: OutputChunk) => void } {
  const chunks: Array<{ stream: OutputChunk['stream'], text: string, at: number }> = []
  return { chunks, onOutput: (chunk) => { chunks.push({ stream: chunk.stream, text: decode(chunk.data), at: performance.now() }) } }
}

/** waits until the pool is back at its size (it refills in the background) */
export async function poolRefilled (runtime: SandboxRuntime, js: number, wasm: number, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const { idle } = runtime.stats()
    if (idle.js >= js && idle.wasm >= wasm) return
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  throw new Error(`the pool did not refill: ${JSON.stringify(runtime.stats())}`)
}
