import { BkgError } from '../../../lib/bkg-error.ts'
import { capWasmMemory } from './memory-cap.ts'
import { Wasm } from './webassembly.ts'
import type { WasmModule } from './webassembly.ts'

const WASI_NAMESPACE = 'wasi_snapshot_preview1'

function refuse (message: string): never {
  throw new BkgError('invalid_module', 422, message)
}

/**
 * Checks an uploaded WASI preview1 module and compiles it with its memory capped. Everything is
 * checked before anything is instantiated: a failed instantiate inside wasmer-js can leave its
 * locks poisoned for the rest of the worker's life. Allowed: function imports from
 * `wasi_snapshot_preview1` only (no host functions, no imported memory or tables), an exported
 * `memory` and `_start`. Refusals are BkgError('invalid_module', 422).
 */
export function compileWasiModule (bytes: Uint8Array, memoryCapBytes: number): WasmModule {
  if (!Wasm.validate(bytes)) refuse('not a valid WebAssembly module')
  const capped = capWasmMemory(bytes, memoryCapBytes)
  const module = new Wasm.Module(capped.bytes)
  const imports = Wasm.Module.imports(module)
  const foreign = imports.filter(entry => entry.module !== WASI_NAMESPACE || entry.kind !== 'function')
  if (foreign.length > 0) {
    const names = foreign.slice(0, 5).map(entry => `${entry.module}.${entry.name} (${entry.kind})`).join(', ')
    refuse(`a module may import only functions of ${WASI_NAMESPACE}; it imports ${names}`)
  }
  // wasmer-js cannot tell which WASI version a module wants when it imports nothing of it
  if (imports.length === 0) refuse(`the module imports nothing from ${WASI_NAMESPACE}: it is not a WASI program`)
  const exports = Wasm.Module.exports(module)
  if (!exports.some(entry => entry.name === 'memory' && entry.kind === 'memory')) refuse('the module exports no memory named "memory"')
  if (!exports.some(entry => entry.name === '_start' && entry.kind === 'function')) refuse('the module exports no "_start" function')
  return module
}
