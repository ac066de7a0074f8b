import { BkgError } from '../../../lib/bkg-error.ts'
import { WASM_PAGE_BYTES } from './constants.ts'

/** the memory of a module after capping: where it is declared, its minimum and its new maximum, in pages */
export interface CappedMemory {
  imported: boolean
  minPages: number
  maxPages: number
}

const SECTION_IMPORT = 2
const SECTION_MEMORY = 5
const IMPORT_KIND_FUNC = 0
const IMPORT_KIND_TABLE = 1
const IMPORT_KIND_MEMORY = 2
const IMPORT_KIND_GLOBAL = 3
const IMPORT_KIND_TAG = 4
const LIMITS_HAS_MAX = 0x01

function refuse (message: string): never {
  throw new BkgError('invalid_module', 422, message)
}

class Reader {
  position: number
  readonly bytes: Uint8Array
  constructor (bytes: Uint8Array, position: number) {
    this.bytes = bytes
    this.position = position
  }

  byte (): number {
    if (this.position >= this.bytes.length) refuse('the module ends in the middle of a section')
    return this.bytes[this.position++]
  }

  u32 (): number {
    let result = 0
    let shift = 0
    for (;;) {
      const byte = this.byte()
      if (shift === 28 && byte > 0x0f) refuse('a LEB128 number is longer than 32 bits')
      result |= (byte & 0x7f) << shift
      if ((byte & 0x80) === 0) return result >>> 0
      shift += 7
    }
  }

  skip (count: number): void {
    this.position += count
    if (this.position > this.bytes.length) refuse('the module ends in the middle of a section')
  }
}

function encodeU32 (value: number): number[] {
  const out: number[] = []
  let rest = value >>> 0
  do {
    let byte = rest & 0x7f
    rest >>>= 7
    if (rest !== 0) byte |= 0x80
    out.push(byte)
  } while (rest !== 0)
  return out
}

/** reads one memory's limits at the reader and returns them re-encoded with a maximum of at most capPages */
function cappedLimits (reader: Reader, capPages: number): { encoded: number[], minPages: number, maxPages: number } {
  const flags = reader.byte()
  // bit 1 is `shared` (threads), bit 2 is memory64, bit 3 a custom page size: all refused
  if ((flags & ~LIMITS_HAS_MAX) !== 0) refuse(`memory limits with flags 0x${flags.toString(16)} (shared, 64-bit or custom pages) are not supported`)
  const minPages = reader.u32()
  const declaredMax = (flags & LIMITS_HAS_MAX) !== 0 ? reader.u32() : undefined
  if (minPages > capPages) {
    refuse(`the module needs at least ${minPages * WASM_PAGE_BYTES} bytes of memory, more than its cap of ${capPages * WASM_PAGE_BYTES}`)
  }
  const maxPages = Math.min(declaredMax ?? capPages, capPages)
  return { encoded: [LIMITS_HAS_MAX, ...encodeU32(minPages), ...encodeU32(maxPages)], minPages, maxPages }
}

/** skips the type description of a non-memory import */
function skipImportDescription (reader: Reader, kind: number): void {
  if (kind === IMPORT_KIND_FUNC) {
    reader.u32()
  } else if (kind === IMPORT_KIND_TABLE) {
    reader.byte()
    const flags = reader.byte()
    reader.u32()
    if ((flags & LIMITS_HAS_MAX) !== 0) reader.u32()
  } else if (kind === IMPORT_KIND_GLOBAL) {
    reader.skip(2)
  } else if (kind === IMPORT_KIND_TAG) {
    reader.byte()
    reader.u32()
  } else {
    refuse(`unknown import kind ${kind}`)
  }
}

/**
 * Rewrites a WebAssembly binary so that its memory cannot grow past `capBytes`: the declared
 * maximum becomes min(declared, cap), or the cap where none is declared. A guest's memory is its
 * own `WebAssembly.Memory` in the worker, and neither V8 nor a worker's `resourceLimits` bound it
 * (an uncapped module grew to 4 GiB here), so the declared maximum is the only hard limit.
 *
 * Only the memory section (and the import section when the memory is imported) is rebuilt; every
 * other section is copied byte for byte, since nothing refers to the memory section by offset.
 * Refused with BkgError('invalid_module', 422): a minimum above the cap, shared or 64-bit
 * memories, more than one memory, a binary that is not WebAssembly.
 */
export function capWasmMemory (module: Uint8Array, capBytes: number): { bytes: Uint8Array, memory: CappedMemory | null } {
  const capPages = Math.floor(capBytes / WASM_PAGE_BYTES)
  if (module.length < 8 || module[0] !== 0x00 || module[1] !== 0x61 || module[2] !== 0x73 || module[3] !== 0x6d) {
    refuse('not a WebAssembly binary')
  }
  if (module[4] !== 1 || module[5] !== 0 || module[6] !== 0 || module[7] !== 0) refuse('not a WebAssembly core module (version 1)')
  const parts: Uint8Array[] = [module.subarray(0, 8)]
  let memory: CappedMemory | null = null
  let memories = 0
  const reader = new Reader(module, 8)
  while (reader.position < module.length) {
    const sectionStart = reader.position
    const id = reader.byte()
    const size = reader.u32()
    const bodyStart = reader.position
    reader.skip(size)
    const end = reader.position
    if (id !== SECTION_MEMORY && id !== SECTION_IMPORT) {
      parts.push(module.subarray(sectionStart, end))
      continue
    }
    const body = new Reader(module.subarray(0, end), bodyStart)
    const count = body.u32()
    const out: number[] = encodeU32(count)
    for (let i = 0; i < count; i++) {
      if (id === SECTION_MEMORY) {
        const limits = cappedLimits(body, capPages)
        out.push(...limits.encoded)
        memories++
        memory = { imported: false, minPages: limits.minPages, maxPages: limits.maxPages }
        continue
      }
      const importStart = body.position
      body.skip(body.u32())
      body.skip(body.u32())
      const kind = body.byte()
      out.push(...module.subarray(importStart, body.position))
      if (kind === IMPORT_KIND_MEMORY) {
        const limits = cappedLimits(body, capPages)
        out.push(...limits.encoded)
        memories++
        memory = { imported: true, minPages: limits.minPages, maxPages: limits.maxPages }
      } else {
        const descriptionStart = body.position
        skipImportDescription(body, kind)
        out.push(...module.subarray(descriptionStart, body.position))
      }
    }
    if (body.position !== end) refuse(`section ${id} is longer than its entries`)
    if (memories > 1) refuse('a module may have one memory')
    parts.push(Uint8Array.of(id, ...encodeU32(out.length), ...out))
  }
  const bytes = new Uint8Array(parts.reduce((total, part) => total + part.length, 0))
  let offset = 0
  for (const part of parts) {
    bytes.set(part, offset)
    offset += part.length
  }
  return { bytes, memory }
}
