import pino from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { stopAll, startAll } from '../../lib/startable.ts'
import type { Principal } from '../../node/auth/index.ts'
import { sandboxService, type SandboxService, type SandboxServiceInit } from '../../node/sandbox/index.ts'
import type { PersistentGuest, RunRequest, RunResult, SandboxImage, SandboxRuntime } from '../../node/sandbox/runtime/types.ts'
import { tempDir } from '../helpers/mesh.ts'

/**
 * The sandbox service on a small runtime of its own: a guest whose "language" is `name=value`
 * and `print name` lines, whose memory image is its variables as JSON padded to 256 KiB (so
 * snapshots have pages to share). What is checked is the service: namespaces, quotas,
 * snapshots on disk, restore, forks, restarts; the real runtimes have their own tests.
 */

const log = pino({ level: 'silent' })
const IMAGE_BYTES = 256 * 1024
const encoder = new TextEncoder()

/** The refusal `promise` rejects with (code, status, message); fails the test when it resolves. */
async function refusalOf (promise: Promise<unknown>): Promise<{ code: string, status: number, message: string }> {
  try {
    await promise
  } catch (err) {
    return err as { code: string, status: number, message: string }
  }
  throw new Error('expected a refusal')
}

class ToyGuest implements PersistentGuest {
  vars: Record<string, string> = {}
  closed = false
  private readonly runtime: ToyRuntime

  constructor (runtime: ToyRuntime, image?: SandboxImage) {
    this.runtime = runtime
    if (image != null) this.load(image)
  }

  async run (request: RunRequest): Promise<RunResult> {
    if (this.closed) throw new Error('guest closed')
    this.runtime.runs++
    let stdout = ''
    for (const line of (request.code ?? '').split('\n')) {
      const set = /^(\w+)=(.*)$/.exec(line)
      if (set != null) this.vars[set[1]] = set[2]
      const print = /^print (\w+)$/.exec(line)
      if (print != null) stdout += `${this.vars[print[1]] ?? ''}\n`
      if (line === 'hang') {
        // what a limit breach looks like from the service: the runtime ended the run
        return { exitCode: null, stdout, stderr: '', reason: 'timeout', cpuMs: 1, wallMs: request.limits.timeoutMs, memoryBytes: IMAGE_BYTES, files: {} }
      }
      if (line === 'wait') await new Promise((resolve) => setTimeout(resolve, 200))
    }
    return { exitCode: 0, stdout, stderr: '', cpuMs: 2, wallMs: 2, memoryBytes: IMAGE_BYTES, files: {} }
  }

  async image (): Promise<SandboxImage> {
    const memory = new Uint8Array(IMAGE_BYTES)
    memory.set(encoder.encode(JSON.stringify(this.vars)))
    return { language: 'js', memory, files: {} }
  }

  async restore (image: SandboxImage): Promise<void> {
    this.load(image)
  }

  async close (): Promise<void> {
    this.closed = true
    this.runtime.open--
  }

  private load (image: SandboxImage): void {
    const text = new TextDecoder().decode(image.memory!).replace(/\0+$/, '')
    this.vars = JSON.parse(text)
  }
}

class ToyRuntime implements Pick<SandboxRuntime, 'runOnce' | 'openPersistent' | 'start'> {
  open = 0
  runs = 0
  starts = 0

  async start (): Promise<void> {
    this.starts++
  }

  async runOnce (_language: string, request: RunRequest): Promise<RunResult> {
    const guest = new ToyGuest(this)
    this.open++
    try {
      return await guest.run(request)
    } finally {
      await guest.close()
    }
  }

  async openPersistent (_language: string, init: { memoryBytes: number, image?: SandboxImage }): Promise<PersistentGuest> {
    this.open++
    return new ToyGuest(this, init.image)
  }
}

const admin: Principal = { kind: 'node-admin', role: 'admin', namespace: '*', tokenId: 'admin', expiresAt: null }
const token = (namespace: string, role: Principal['role'] = 'writer'): Principal => ({ kind: 'namespace', role, namespace, tokenId: `t-${namespace}-${role}`, expiresAt: null })
const lab = token('lab')

describe('sandbox service', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let runtime: ToyRuntime
  let service: SandboxService | undefined

  async function open (init: Partial<SandboxServiceInit> = {}): Promise<SandboxService> {
    if (service != null) await stopAll([['sandboxes', service]])
    runtime = new ToyRuntime()
    service = sandboxService({ dir: tmp.dir, ...init })({ runtime, log })
    await startAll([['sandboxes', service]])
    return service
  }

  const out = async (sandboxes: SandboxService, id: string, code: string): Promise<string> => (await sandboxes.exec(lab, id, { code })).stdout

  beforeEach(async () => {
    tmp = await tempDir('bkg-sandbox-service-')
  })

  afterEach(async () => {
    if (service != null) await stopAll([['sandboxes', service]])
    service = undefined
    await tmp.remove()
  })

  it('a persistent sandbox keeps its state between execs; a quick one does not', async () => {
    const sandboxes = await open()
    // no run yet, no runtime: a node that never runs code carries no sandbox workers
    expect(runtime.starts).toBe(0)
    const box = await sandboxes.create(lab, { language: 'js', mode: 'persistent' })
    expect(box).toMatchObject({ namespace: 'lab', language: 'js', mode: 'persistent', state: 'stopped', policy: { timeoutMs: 10_000 } })
    await out(sandboxes, box.id, 'x=1')
    expect(await out(sandboxes, box.id, 'print x')).toBe('1\n')
    expect(sandboxes.get(lab, box.id)).toMatchObject({ state: 'idle', metrics: { executions: 2, cpuMs: 4 } })

    expect(runtime.starts).toBe(1)
    const quick = await sandboxes.create(lab, { language: 'js', mode: 'quick' })
    await out(sandboxes, quick.id, 'x=1')
    expect(await out(sandboxes, quick.id, 'print x')).toBe('\n')
    expect(await refusalOf(sandboxes.snapshot(lab, quick.id))).toMatchObject({ code: 'not_persistent', status: 409 })
  })

  it('snapshot, change, restore: the earlier state is back; an unchanged state stores no new pages', async () => {
    const sandboxes = await open()
    const box = await sandboxes.create(lab, { language: 'js', mode: 'persistent' })
    await out(sandboxes, box.id, 'x=before')
    const first = await sandboxes.snapshot(lab, box.id)
    expect(first).toMatchObject({ memoryBytes: IMAGE_BYTES, files: 0 })
    expect(first.storedBytes).toBeGreaterThan(0)
    // the same state again: every page is held already
    expect((await sandboxes.snapshot(lab, box.id)).storedBytes).toBe(0)

    await out(sandboxes, box.id, 'x=after')
    await sandboxes.restore(lab, box.id, first.id)
    expect(await out(sandboxes, box.id, 'print x')).toBe('before\n')
    expect(await refusalOf(sandboxes.restore(lab, box.id, 'snap_0000000000000000'))).toMatchObject({ code: 'snapshot_not_found', status: 404 })
  })

  it('fork ×5: each fork starts from the snapshot and goes its own way', async () => {
    const sandboxes = await open()
    const box = await sandboxes.create(lab, { language: 'js', mode: 'persistent' })
    await out(sandboxes, box.id, 'x=root')
    const forks = await sandboxes.fork(lab, box.id, { count: 5 })
    expect(forks).toHaveLength(5)
    expect(runtime.open).toBe(6)
    for (const [i, fork] of forks.entries()) {
      expect(fork.origin).toMatch(/^snap_/)
      expect(await out(sandboxes, fork.id, 'print x')).toBe('root\n')
      await out(sandboxes, fork.id, `x=fork${i}`)
    }
    for (const [i, fork] of forks.entries()) expect(await out(sandboxes, fork.id, 'print x')).toBe(`fork${i}\n`)
    expect(await out(sandboxes, box.id, 'print x')).toBe('root\n')
    expect(await refusalOf(sandboxes.fork(lab, box.id, { count: 17 }))).toMatchObject({ code: 'invalid_input', status: 400 })
  })

  it('after a restart a sandbox comes back from its last snapshot; stop saves one first', async () => {
    let sandboxes = await open()
    const box = await sandboxes.create(lab, { language: 'js', mode: 'persistent' })
    await out(sandboxes, box.id, 'x=saved')
    await sandboxes.snapshot(lab, box.id)
    await out(sandboxes, box.id, 'y=unsaved')
    const stopped = await sandboxes.stopSandbox(lab, box.id)
    expect(stopped.state).toBe('stopped')
    expect(runtime.open).toBe(0)
    expect(await out(sandboxes, box.id, 'print y')).toBe('unsaved\n')

    // a node that dies between snapshots: what the last snapshot holds comes back
    await sandboxes.snapshot(lab, box.id)
    await out(sandboxes, box.id, 'z=lost')
    service = undefined
    sandboxes = await open()
    expect(sandboxes.list(lab).map((info) => [info.id, info.state])).toEqual([[box.id, 'stopped']])
    expect(await out(sandboxes, box.id, 'print x\nprint y\nprint z')).toBe('saved\nunsaved\n\n')
  })

  it('a run ended by a limit resets the sandbox to its last snapshot', async () => {
    const sandboxes = await open()
    const box = await sandboxes.create(lab, { language: 'js', mode: 'persistent' })
    await out(sandboxes, box.id, 'x=1')
    await sandboxes.snapshot(lab, box.id)
    const result = await sandboxes.exec(lab, box.id, { code: 'x=2\nhang' })
    expect(result.reason).toBe('timeout')
    expect(await out(sandboxes, box.id, 'print x')).toBe('1\n')
  })

  it('a namespace token sees only its namespace; a reader inspects but does not run; the admin sees all', async () => {
    const sandboxes = await open()
    const mine = await sandboxes.create(lab, { language: 'js', mode: 'persistent' })
    const theirs = await sandboxes.create(admin, { namespace: 'other', language: 'js', mode: 'persistent' })
    expect(sandboxes.list(lab).map((info) => info.id)).toEqual([mine.id])
    expect(sandboxes.list(admin).map((info) => info.id).sort()).toEqual([mine.id, theirs.id].sort())
    expect(await refusalOf(sandboxes.exec(lab, theirs.id, { code: 'print x' }))).toMatchObject({ code: 'sandbox_not_found', status: 404 })
    expect(await refusalOf(sandboxes.create(lab, { namespace: 'other', language: 'js', mode: 'quick' }))).toMatchObject({ code: 'forbidden', status: 403 })
    const reader = token('lab', 'reader')
    expect(sandboxes.get(reader, mine.id).id).toBe(mine.id)
    expect(await refusalOf(sandboxes.exec(reader, mine.id, { code: 'x=1' }))).toMatchObject({ code: 'forbidden', status: 403 })
    expect(await refusalOf(sandboxes.remove(reader, mine.id))).toMatchObject({ code: 'forbidden', status: 403 })
  })

  it('quotas: sandboxes, memory of running guests and runs at once per namespace → 429', async () => {
    const MiB = 1024 * 1024
    const sandboxes = await open({ quotas: { sandboxes: 3, memoryBytes: 128 * MiB, concurrentRuns: 1 } })
    const a = await sandboxes.create(lab, { language: 'js', mode: 'persistent', policy: { memoryBytes: 64 * MiB } })
    const b = await sandboxes.create(lab, { language: 'js', mode: 'persistent', policy: { memoryBytes: 64 * MiB } })
    const c = await sandboxes.create(lab, { language: 'js', mode: 'persistent', policy: { memoryBytes: 64 * MiB } })
    expect(await refusalOf(sandboxes.create(lab, { language: 'js', mode: 'quick' }))).toMatchObject({ code: 'quota_exceeded', status: 429 })
    // another namespace has quotas of its own
    await sandboxes.create(token('other'), { language: 'js', mode: 'quick' })

    const running = sandboxes.exec(lab, a.id, { code: 'wait' })
    expect(await refusalOf(sandboxes.exec(lab, b.id, { code: 'x=1' }))).toMatchObject({ code: 'quota_exceeded', status: 429 })
    await running
    await out(sandboxes, b.id, 'x=1')
    // a and b hold 128 MiB: c's guest would pass the memory quota until one stops
    expect(await refusalOf(sandboxes.exec(lab, c.id, { code: 'x=1' }))).toMatchObject({ code: 'quota_exceeded', status: 429 })
    await sandboxes.stopSandbox(lab, a.id)
    await out(sandboxes, c.id, 'x=1')
  })

  it('policies and inputs are checked: 400 with the field named', async () => {
    const sandboxes = await open()
    expect(await refusalOf(sandboxes.create(lab, { language: 'js', mode: 'quick', policy: { timeoutMs: -1 } }))).toMatchObject({ code: 'invalid_policy', status: 400, message: /timeoutMs/ })
    expect(await refusalOf(sandboxes.create(lab, { language: 'js', mode: 'quick', policy: { memoryBytes: 2 ** 40 } }))).toMatchObject({ code: 'invalid_policy', message: /memoryBytes/ })
    expect(await refusalOf(sandboxes.create(lab, { language: 'js', mode: 'quick', policy: { cpu: 1 } as never }))).toMatchObject({ code: 'invalid_policy' })
    const box = await sandboxes.create(lab, { language: 'js', mode: 'quick', policy: { timeoutMs: 1000 } })
    expect(await refusalOf(sandboxes.exec(lab, box.id, { code: 'x', timeoutMs: 5000 }))).toMatchObject({ code: 'invalid_input', message: /timeoutMs/ })
    expect(await refusalOf(sandboxes.exec(lab, box.id, { code: 'x', files: { '/a/../../etc/passwd': new Uint8Array(1) } }))).toMatchObject({ code: 'invalid_input', message: /segments/ })
    expect(await refusalOf(sandboxes.exec(lab, box.id, { code: 'x', files: { 'relative.txt': new Uint8Array(1) } }))).toMatchObject({ code: 'invalid_input' })
    expect(await refusalOf(sandboxes.run(lab, { language: 'wasm', code: 'x' }))).toMatchObject({ code: 'invalid_input', message: /module/ })
    expect(runtime.runs).toBe(0)
  })

  it('remove takes the sandbox\'s snapshots, except those a fork still comes from', async () => {
    const sandboxes = await open()
    const box = await sandboxes.create(lab, { language: 'js', mode: 'persistent' })
    await out(sandboxes, box.id, 'x=kept')
    const [fork] = await sandboxes.fork(lab, box.id, { count: 1 })
    await out(sandboxes, fork.id, 'x=changed')
    await sandboxes.remove(lab, box.id)
    expect(await refusalOf(sandboxes.exec(lab, box.id, { code: 'print x' }))).toMatchObject({ code: 'sandbox_not_found' })
    await sandboxes.restore(lab, fork.id, fork.origin!)
    expect(await out(sandboxes, fork.id, 'print x')).toBe('kept\n')
  })
})
