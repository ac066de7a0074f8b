import { init as initWasmer, WASI } from '@wasmer/wasi'
import type { MemFS } from '@wasmer/wasi'
import { BkgError } from '../../../lib/bkg-error.ts'
import { MIN_WASM_MEMORY_BYTES, WASI_PROGRAM_NAME, WASM_PAGE_BYTES } from './constants.ts'
import { compileWasiModule } from './wasi-module.ts'
import { Wasm } from './webassembly.ts'
import type { WasmMemory } from './webassembly.ts'
import { STREAM_STDERR, STREAM_STDOUT } from './worker-protocol.ts'
import type { GuestIO, StreamId } from './guest-io.ts'
import type { CreateRunner, GuestRunner, RunnerInit, RunnerOutcome } from './runner.ts'
import type { RunJob, WorkerImage } from './worker-protocol.ts'

const ERRNO_SUCCESS = 0
const STDIN = 0

/** thrown from our WASI imports to unwind the guest when its run must end */
class StopGuest extends Error {}

type Tree = Map<string, Uint8Array>

/** an absolute `/`-separated path without `.`/`..` parts, or a refusal */
function cleanPath (path: string): string {
  const parts = path.split('/').filter(part => part !== '' && part !== '.')
  if (parts.includes('..') || parts.length === 0) throw new BkgError('invalid_input', 400, `not a file path: ${JSON.stringify(path)}`)
  return '/' + parts.join('/')
}

function sameBytes (a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((byte, i) => byte === b[i])
}

/** wasmer's errors carry its whole minified source line; the first line, shortened, is what they say */
function shortMessage (error: unknown): string {
  const text = error instanceof Error ? error.message : String(error)
  return text.split('\n')[0]
    .replace(/^Error while running start function: /, '')
    .replace(/^RuntimeError: JsValue\((.*)\)?$/, '$1')
    .slice(0, 300)
}

/**
 * Writes files into a WASI instance's in-memory filesystem (creating parent directories).
 * Only the filesystem of a live WASI object (`wasi.fs`) is used: a MemFS handed to a WASI and
 * used again after a run stayed locked ("lock error") here, so files live in a plain map
 * between runs and are copied in and out around each one.
 */
function writeTree (fs: MemFS, tree: Tree): void {
  const made = new Set<string>(['/'])
  for (const [path, content] of tree) {
    const parts = path.split('/').slice(1, -1)
    for (let i = 1; i <= parts.length; i++) {
      const dir = '/' + parts.slice(0, i).join('/')
      if (!made.has(dir)) {
        fs.createDir(dir)
        made.add(dir)
      }
    }
    const file = fs.open(path, { write: true, create: true, truncate: true })
    try {
      file.write(content)
    } finally {
      file.free()
    }
  }
}

/** every file in a WASI filesystem (opening only paths it listed: a failed open can poison wasmer-js) */
function readTree (fs: MemFS): Tree {
  const tree: Tree = new Map()
  const pending = ['/']
  while (pending.length > 0) {
    const dir = pending.pop() as string
    for (const entry of fs.readDir(dir) as Array<{ path: string, metadata: { filetype: { dir: boolean, file: boolean } } }>) {
      if (entry.metadata.filetype.dir) {
        pending.push(entry.path)
      } else if (entry.metadata.filetype.file) {
        const file = fs.open(entry.path, { read: true })
        try {
          tree.set(entry.path, file.read())
        } finally {
          file.free()
        }
      }
    }
  }
  return tree
}

/**
 * A WASI preview1 guest through @wasmer/wasi (never node:wasi: Node documents it as no security
 * boundary). Each run gets a fresh WASI instance with an in-memory filesystem; the module's
 * memory is capped by rewriting its declared maximum (memory-cap.ts). stdout/stderr and stdin
 * go through our own fd_write/fd_read, so output streams as it is written and stops at the limit;
 * bytes written to files count against the memory cap (they live outside the guest's memory).
 * A persistent guest's state is its filesystem, kept here between runs.
 */
class WasiRunner implements GuestRunner {
  private tree: Tree = new Map()
  private readonly persistent: boolean

  constructor (persistent: boolean) {
    this.persistent = persistent
  }

  static async create (init: RunnerInit): Promise<WasiRunner> {
    await initWasmer()
    return new WasiRunner(init.mode === 'persistent')
  }

  run (job: RunJob, io: GuestIO): RunnerOutcome {
    if (job.module === undefined) throw new BkgError('invalid_input', 400, 'a wasm run needs a module')
    if (job.limits.memoryBytes < MIN_WASM_MEMORY_BYTES) throw new BkgError('invalid_limits', 400, `a WASI guest needs a memory cap of at least ${MIN_WASM_MEMORY_BYTES} bytes`)
    const module = compileWasiModule(job.module, job.limits.memoryBytes)
    const before: Tree = new Map(this.persistent ? this.tree : [])
    for (const [path, content] of Object.entries(job.files)) before.set(cleanPath(path), content)

    const wasi = new WASI({ args: [WASI_PROGRAM_NAME, ...job.args], env: job.env })
    const fs = wasi.fs
    try {
      writeTree(fs, before)
      const imports = wasi.getImports(module) as { wasi_snapshot_preview1: Record<string, (...args: any[]) => number> }
      // the imports need the instance's memory, which exists only once they are linked
      const linked: { memory?: WasmMemory } = {}
      this.wrapImports(imports.wasi_snapshot_preview1, () => linked.memory as WasmMemory, io, job.limits.memoryBytes)
      const instance = new Wasm.Instance(module, imports)
      const memory = instance.exports.memory as WasmMemory
      linked.memory = memory
      wasi.instantiate(instance)

      let exitCode: number | null = null
      let trap: unknown
      try {
        exitCode = wasi.start()
      } catch (error) {
        trap = error
      }
      const memoryBytes = memory.buffer.byteLength
      const common = { cpuMs: 0, memoryBytes, recycle: false }
      if (io.stopReason !== undefined) return { ...common, exitCode: null, reason: io.stopReason, files: {} }
      if (trap !== undefined && memoryBytes + WASM_PAGE_BYTES > job.limits.memoryBytes) {
        // a trap with the memory at its cap is (nearly always) a failed allocation: the program aborted
        return { ...common, exitCode: null, reason: 'memory', files: {} }
      }
      const after = readTree(fs)
      if (this.persistent) this.tree = after
      const changed = [...after].filter(([path, content]) => !sameBytes(before.get(path), content))
      const files = io.filesWithinLimit(changed)
      if (trap !== undefined) {
        const message = shortMessage(trap)
        io.write(STREAM_STDERR, new TextEncoder().encode(`wasm trap: ${message}\n`))
        return { ...common, exitCode: 1, error: { name: 'RuntimeError', message }, ...files }
      }
      return { ...common, exitCode, ...files }
    } finally {
      fs.free()
      wasi.free()
    }
  }

  /** stdout/stderr streamed and limited, stdin from the run, file writes counted against the memory cap */
  private wrapImports (wasiImports: Record<string, (...args: any[]) => number>, memory: () => WasmMemory, io: GuestIO, fileBytesCap: number): void {
    const { fd_write: fdWrite, fd_pwrite: fdPwrite, fd_read: fdRead } = wasiImports
    let fileBytesWritten = 0
    const iovecs = (pointer: number, count: number): Array<[number, number]> => {
      const view = new DataView(memory().buffer)
      return Array.from({ length: count }, (_, i) => [view.getUint32(pointer + i * 8, true), view.getUint32(pointer + i * 8 + 4, true)])
    }
    const countFileBytes = (iovs: number, count: number): void => {
      fileBytesWritten += iovecs(iovs, count).reduce((sum, [, length]) => sum + length, 0)
      if (fileBytesWritten > fileBytesCap) {
        io.breach('memory')
        throw new StopGuest('the files written exceed the memory cap')
      }
    }
    wasiImports.fd_write = (fd: number, iovs: number, count: number, written: number): number => {
      if (fd !== STREAM_STDOUT && fd !== STREAM_STDERR) {
        countFileBytes(iovs, count)
        return fdWrite(fd, iovs, count, written)
      }
      let total = 0
      for (const [pointer, length] of iovecs(iovs, count)) {
        if (!io.write(fd as StreamId, new Uint8Array(memory().buffer, pointer, length))) throw new StopGuest('the run must stop')
        total += length
      }
      new DataView(memory().buffer).setUint32(written, total, true)
      return ERRNO_SUCCESS
    }
    wasiImports.fd_pwrite = (fd: number, iovs: number, count: number, offset: bigint, written: number): number => {
      countFileBytes(iovs, count)
      return fdPwrite(fd, iovs, count, offset, written)
    }
    let pending: Uint8Array = new Uint8Array(0)
    wasiImports.fd_read = (fd: number, iovs: number, count: number, read: number): number => {
      if (fd !== STDIN) return fdRead(fd, iovs, count, read)
      let total = 0
      for (const [pointer, length] of iovecs(iovs, count)) {
        let filled = 0
        while (filled < length) {
          if (pending.length === 0) {
            // block only while nothing has been read yet: a read returns what is there
            if (total + filled > 0) break
            const chunk = io.readStdin()
            if (chunk === null) break
            pending = chunk
          }
          const take = Math.min(pending.length, length - filled)
          new Uint8Array(memory().buffer, pointer + filled, take).set(pending.subarray(0, take))
          pending = pending.subarray(take)
          filled += take
        }
        total += filled
        if (filled < length) break
      }
      if (io.shouldStop()) throw new StopGuest('the run must stop')
      new DataView(memory().buffer).setUint32(read, total, true)
      return ERRNO_SUCCESS
    }
  }

  reset (): boolean {
    return true
  }

  image (): WorkerImage {
    return { memory: null, files: Object.fromEntries(this.tree) }
  }

  restore (image: WorkerImage): void {
    this.tree = new Map(Object.entries(image.files).map(([path, content]) => [cleanPath(path), content]))
  }
}

export const createRunner: CreateRunner = async (init) => await WasiRunner.create(init)
