/*
 * The WebAssembly API, typed for what the runtime uses: the project's TypeScript lib (es2024,
 * no DOM) has no WebAssembly types, so they are declared here instead of as globals for all.
 */

export interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow: (deltaPages: number) => number
}

/** a compiled module (structured-clonable: it can be posted to a worker) */
export interface WasmModule {
  readonly [Symbol.toStringTag]: string
}

export interface WasmInstance {
  readonly exports: Record<string, unknown>
}

export type WasmExternKind = 'function' | 'table' | 'memory' | 'global' | 'tag'

interface WasmApi {
  Memory: new (descriptor: { initial: number, maximum?: number }) => WasmMemory
  Module: {
    new (bytes: Uint8Array | ArrayBuffer): WasmModule
    imports: (module: WasmModule) => Array<{ module: string, name: string, kind: WasmExternKind }>
    exports: (module: WasmModule) => Array<{ name: string, kind: WasmExternKind }>
  }
  Instance: new (module: WasmModule, imports?: Record<string, Record<string, unknown>>) => WasmInstance
  validate: (bytes: Uint8Array | ArrayBuffer) => boolean
  compile: (bytes: Uint8Array | ArrayBuffer) => Promise<WasmModule>
}

export const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly
