#!/usr/bin/env node
// Entry point, plain JavaScript on purpose: Node strips TypeScript types with a WebAssembly
// compiler that costs ~17 MiB of memory per process. With the on-disk compile cache enabled before
// any .ts module loads, later starts reuse the stripped and compiled code and never load it; they
// also start several hundred milliseconds sooner.
import { enableCompileCache } from 'node:module'

enableCompileCache()
await import('./program.ts')
