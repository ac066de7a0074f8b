/**
 * In-memory fakes of the services the MCP tools use, for MCP-layer tests: they execute nothing,
 * but keep the services' contracts (principals and namespaces, BkgError refusals, output
 * streamed through onOutput, the abort signal honoured).
 *
 * The fake sandbox "runs" a tiny command language, one command per line:
 *   print:TEXT    stdout TEXT\n              err:TEXT     stderr TEXT\n
 *   sleep:MS      ticks every 20 ms (stdout `tick N\n`) for MS ms; aborting ends it (reason cancelled)
 *   exit:N        exit code N                 throw:MSG    an uncaught guest exception (exit code 1)
 *   set:K=V       a variable (persistent sandboxes keep it)      get:K   stdout its value
 *   write:/P=T    writes a file (returned in files)              cat:/P  stdout a file given in `files`
 *   stdin         stdout what stdin holds
 */
import { EventEmitter } from 'node:events'
import type { Principal } from '../../node/auth/index.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import type { McpServices } from '../../node/mcp/index.ts'
import type { ExecInput, ExecOptions, ExecResult, SandboxInfo, SandboxService, SnapshotInfo } from '../../node/sandbox/types.ts'

const DEFAULT_POLICY = { timeoutMs: 5000, memoryBytes: 64 * 1024 * 1024, outputBytes: 1024 * 1024, env: {} }

function mayRead (principal: Principal, namespace: string): boolean {
  return principal.kind === 'node-admin' || principal.namespace === namespace
}

function mayWrite (principal: Principal, namespace: string): void {
  if (!mayRead(principal, namespace)) throw new BkgError('forbidden', 403, `this token is not for namespace ${namespace}`)
  if (principal.role === 'reader') throw new BkgError('forbidden', 403, 'a reader token cannot change sandboxes')
}

interface FakeBox { info: SandboxInfo, vars: Map<string, string>, images: Map<string, Map<string, string>> }

/** what the tests observe of runs: starts, and aborts with their reason */
export interface RunEvents {
  start: [id: string, code: string]
  aborted: [id: string, reason: unknown]
}

export class FakeSandboxes implements SandboxService {
  readonly events = new EventEmitter<RunEvents>()
  private readonly boxes = new Map<string, FakeBox>()
  private counter = 0

  async run (principal: Principal, input: ExecInput & { namespace?: string, language: 'js' | 'python' | 'wasm', policy?: Partial<typeof DEFAULT_POLICY> }, options?: ExecOptions): Promise<ExecResult> {
    const namespace = input.namespace ?? (principal.kind === 'node-admin' ? 'default' : principal.namespace)
    mayWrite(principal, namespace)
    return await this.execute(`quick-${++this.counter}`, input, new Map(), { ...DEFAULT_POLICY, ...input.policy }.timeoutMs, options)
  }

  async create (principal: Principal, input: { namespace?: string, language: 'js' | 'python' | 'wasm', mode: 'quick' | 'persistent', policy?: Partial<typeof DEFAULT_POLICY> }): Promise<SandboxInfo> {
    const namespace = input.namespace ?? (principal.kind === 'node-admin' ? 'default' : principal.namespace)
    mayWrite(principal, namespace)
    if (input.policy?.memoryBytes != null && input.policy.memoryBytes > 1024 ** 3) throw new BkgError('invalid_policy', 400, 'memoryBytes: at most 1 GiB')
    const info: SandboxInfo = {
      id: `sb-${++this.counter}`,
      namespace,
      language: input.language,
      mode: input.mode,
      policy: { ...DEFAULT_POLICY, ...input.policy },
      state: 'idle',
      createdAt: new Date().toISOString(),
      metrics: { cpuMs: 0, peakMemoryBytes: 0, executions: 0, snapshots: 0 },
      snapshots: [],
      origin: null
    }
    this.boxes.set(info.id, { info, vars: new Map(), images: new Map() })
    return structuredClone(info)
  }

  private box (principal: Principal, id: string, write: boolean): FakeBox {
    const box = this.boxes.get(id)
    if (box == null || !mayRead(principal, box.info.namespace)) throw new BkgError('sandbox_not_found', 404, `no sandbox ${id}`)
    if (write) mayWrite(principal, box.info.namespace)
    return box
  }

  async exec (principal: Principal, id: string, input: ExecInput, options?: ExecOptions): Promise<ExecResult> {
    const box = this.box(principal, id, true)
    if (box.info.state === 'running') throw new BkgError('sandbox_busy', 409, `sandbox ${id} is running`)
    box.info.state = 'running'
    try {
      const vars = box.info.mode === 'persistent' ? box.vars : new Map<string, string>()
      const result = await this.execute(id, input, vars, Math.min(input.timeoutMs ?? Infinity, box.info.policy.timeoutMs), options)
      box.info.metrics.executions++
      box.info.metrics.cpuMs += result.cpuMs
      return result
    } finally {
      box.info.state = 'idle'
    }
  }

  async snapshot (principal: Principal, id: string): Promise<SnapshotInfo> {
    const box = this.box(principal, id, true)
    if (box.info.mode !== 'persistent') throw new BkgError('not_persistent', 409, `sandbox ${id} is a quick one`)
    const snapshot: SnapshotInfo = { id: `snap-${++this.counter}`, createdAt: new Date().toISOString(), memoryBytes: 65536, files: 0, storedBytes: 4096 }
    box.images.set(snapshot.id, new Map(box.vars))
    box.info.snapshots.push(snapshot)
    box.info.metrics.snapshots++
    return { ...snapshot }
  }

  async restore (principal: Principal, id: string, snapshotId: string): Promise<SandboxInfo> {
    const box = this.box(principal, id, true)
    const image = box.images.get(snapshotId)
    if (image == null) throw new BkgError('snapshot_not_found', 404, `no snapshot ${snapshotId} of ${id}`)
    box.vars = new Map(image)
    box.info.origin = snapshotId
    return structuredClone(box.info)
  }

  async fork (principal: Principal, id: string, input: { snapshotId?: string, count?: number }): Promise<SandboxInfo[]> {
    const box = this.box(principal, id, true)
    const snapshotId = input.snapshotId ?? (await this.snapshot(principal, id)).id
    const image = box.images.get(snapshotId)
    if (image == null) throw new BkgError('snapshot_not_found', 404, `no snapshot ${snapshotId} of ${id}`)
    const forks: SandboxInfo[] = []
    for (let i = 0; i < (input.count ?? 1); i++) {
      const info = await this.create(principal, { namespace: box.info.namespace, language: box.info.language, mode: 'persistent', policy: box.info.policy })
      const fork = this.boxes.get(info.id)!
      fork.vars = new Map(image)
      fork.info.origin = snapshotId
      forks.push(structuredClone(fork.info))
    }
    return forks
  }

  async stopSandbox (principal: Principal, id: string): Promise<SandboxInfo> {
    const box = this.box(principal, id, true)
    box.info.state = 'stopped'
    return structuredClone(box.info)
  }

  async remove (principal: Principal, id: string): Promise<void> {
    this.box(principal, id, true)
    this.boxes.delete(id)
  }

  list (principal: Principal): SandboxInfo[] {
    return [...this.boxes.values()].filter((box) => mayRead(principal, box.info.namespace)).map((box) => structuredClone(box.info))
  }

  get (principal: Principal, id: string): SandboxInfo {
    return structuredClone(this.box(principal, id, false).info)
  }

  private async execute (id: string, input: ExecInput, vars: Map<string, string>, timeoutMs: number, options: ExecOptions = {}): Promise<ExecResult> {
    const started = Date.now()
    const code = input.code ?? ''
    this.events.emit('start', id, code)
    let stdout = ''
    let stderr = ''
    const files: Record<string, Uint8Array> = {}
    const out = (stream: 'stdout' | 'stderr', text: string): void => {
      if (stream === 'stdout') stdout += text
      else stderr += text
      options.onOutput?.({ stream, data: Buffer.from(text) })
    }
    const result = (exitCode: number | null, extra: Partial<ExecResult> = {}): ExecResult =>
      ({ exitCode, stdout, stderr, cpuMs: 1, wallMs: Date.now() - started, memoryBytes: 65536, files, ...extra })
    if (input.module != null) out('stdout', `module of ${input.module.byteLength} bytes\n`)
    for (const line of code.split('\n')) {
      const [command, ...rest] = line.split(':')
      const arg = rest.join(':')
      if (command === 'print') out('stdout', `${arg}\n`)
      else if (command === 'err') out('stderr', `${arg}\n`)
      else if (command === 'exit') return result(Number(arg))
      else if (command === 'throw') {
        out('stderr', `Error: ${arg}\n`)
        return result(1, { error: { name: 'Error', message: arg } })
      } else if (command === 'set') {
        const [key, value] = arg.split('=')
        vars.set(key, value)
      } else if (command === 'get') out('stdout', `${vars.get(arg) ?? 'undefined'}\n`)
      else if (command === 'write') {
        const [path, text] = arg.split('=')
        files[path] = Buffer.from(text)
      } else if (command === 'cat') {
        const file = input.files?.[arg]
        if (file == null) return result(1, { error: { name: 'Error', message: `ENOENT ${arg}` } })
        out('stdout', Buffer.from(file).toString())
      } else if (command === 'stdin') out('stdout', Buffer.from(input.stdin ?? new Uint8Array()).toString())
      else if (command === 'binary') files[arg] = new Uint8Array([0xff, 0x00, 0xfe])
      else if (command === 'sleep') {
        const until = started + Number(arg)
        let tick = 0
        while (Date.now() < until) {
          if (options.signal?.aborted === true) {
            this.events.emit('aborted', id, options.signal.reason)
            return result(null, { reason: 'cancelled' })
          }
          if (Date.now() - started >= timeoutMs) return result(null, { reason: 'timeout' })
          await new Promise((resolve) => setTimeout(resolve, 20))
          out('stdout', `tick ${++tick}\n`)
        }
      }
    }
    return result(0)
  }
}

/** a peer directory with one peer */
export const fakePeers: NonNullable<McpServices['peers']> = {
  list: async (withPing) => [{
    peerId: '12D3KooWFakePeer',
    name: 'node-b',
    roles: ['node'],
    namespaces: ['lab'],
    addrs: ['/ip4/127.0.0.1/tcp/4001'],
    connection: { direction: 'outbound', transport: 'direct', remoteAddr: '/ip4/127.0.0.1/tcp/4001', openedAt: '2026-01-01T00:00:00.000Z' },
    latencyMs: withPing ? 3 : null
  }]
}

type Job = ReturnType<NonNullable<McpServices['models']>['startPull']>

/** models: nothing held, one model in the catalog; a pull takes `pullMs` and reports bytes as it goes */
export function fakeModels (pullMs = 300): NonNullable<McpServices['models']> {
  const jobs = new Map<string, { job: Job, started: number }>()
  const advance = (id: string): Job | undefined => {
    const entry = jobs.get(id)
    if (entry == null) return undefined
    const { job, started } = entry
    const fraction = Math.min(1, (Date.now() - started) / pullMs)
    job.bytes = Math.floor(job.totalBytes * fraction)
    job.state = fraction < 1 ? 'fetching' : 'done'
    if (fraction >= 1 && job.finishedAt == null) job.finishedAt = new Date().toISOString()
    return job
  }
  return {
    list: () => [],
    catalogEntries: () => [{
      envelope: { manifest: { name: 'tiny', version: '1.0.0', publisher: { name: 'acme' }, files: [{ size: 1000 }] } },
      origin: '12D3KooWFakePeer',
      seenAt: '2026-01-01T00:00:00.000Z'
    }] as unknown as ReturnType<NonNullable<McpServices['models']>['catalogEntries']>,
    startPull: (name, version) => {
      if (name !== 'tiny') throw new BkgError('model_not_found', 404, `nobody provides ${name}`)
      const job: Job = { id: `pull-${jobs.size + 1}`, state: 'resolving', name, version: version ?? '1.0.0', totalBytes: 1000, bytes: 0, blocks: 1, resumedBlocks: 0, fetchedBlocks: 0, peers: ['12D3KooWFakePeer'], error: null, startedAt: new Date().toISOString(), finishedAt: null }
      jobs.set(job.id, { job, started: Date.now() })
      return job
    },
    waitForJob: async (id, ms) => {
      const job = advance(id)
      if (job == null || job.finishedAt != null || ms <= 0) return job
      await new Promise((resolve) => setTimeout(resolve, Math.min(ms, Math.max(0, pullMs - (Date.now() - jobs.get(id)!.started)))))
      return advance(id)
    }
  }
}

type Stored = Awaited<ReturnType<NonNullable<McpServices['events']>['list']>>[number]

/** events in memory, with the service's namespace rules (readers may not publish) */
export function fakeEvents (): NonNullable<McpServices['events']> {
  const stored: Stored[] = []
  return {
    publish: async (principal, inputs) => inputs.map((input) => {
      if (!mayRead(principal, input.namespace)) throw new BkgError('forbidden', 403, `not a token for namespace ${input.namespace}`)
      if (principal.role === 'reader') throw new BkgError('forbidden', 403, 'a reader token cannot publish')
      const localId = stored.length + 1
      const event = { id: `ev${localId}`, v: 1, namespace: input.namespace, type: input.type, payload: input.payload, origin: '12D3KooWSelf', seq: localId, prevSeq: localId - 1, hlc: '0', sig: 'sig', localId, receivedAt: new Date().toISOString() } as unknown as Stored
      stored.push(event)
      return event
    }),
    list: async (principal, query) => {
      if (!mayRead(principal, query.namespace)) throw new BkgError('forbidden', 403, `not a token for namespace ${query.namespace}`)
      const after = query.after != null ? Number(query.after) : 0
      return stored.filter((event) => event.namespace === query.namespace && event.localId > after && (query.type == null || event.type === query.type)).slice(0, query.limit)
    }
  }
}

type Objects = NonNullable<McpServices['storage']>['objects']

/** buckets and objects in memory, refusals named as the object store names them */
export function fakeStorage (): NonNullable<McpServices['storage']> {
  const buckets = new Map<string, Map<string, { meta: Awaited<ReturnType<Objects['putObject']>>, bytes: Buffer }>>()
  const bucketOf = (namespace: string, name: string) => {
    const bucket = buckets.get(`${namespace}/${name}`)
    if (bucket == null) throw new BkgError('NoSuchBucket', 404, `no bucket ${name}`)
    return bucket
  }
  const objects: Objects = {
    listBuckets: async (scope) => [...buckets.keys()].filter((key) => key.startsWith(`${scope.namespace}/`)).map((key) => ({ name: key.split('/')[1], createdAt: '2026-01-01T00:00:00.000Z' })),
    createBucket: async (scope, name) => {
      if (buckets.has(`${scope.namespace}/${name}`)) throw new BkgError('BucketAlreadyOwnedByYou', 409, `bucket ${name} exists`)
      buckets.set(`${scope.namespace}/${name}`, new Map())
    },
    list: async (scope, bucket, options) => {
      const keys = [...bucketOf(scope.namespace, bucket).entries()].filter(([key]) => key.startsWith(options.prefix)).sort()
      return { objects: keys.slice(0, options.maxKeys).map(([, object]) => object.meta), prefixes: [], truncated: keys.length > options.maxKeys, last: keys.at(-1)?.[0] ?? null }
    },
    getObject: async (scope, bucket, key) => {
      const object = bucketOf(scope.namespace, bucket).get(key)
      if (object == null) throw new BkgError('NoSuchKey', 404, `no object ${key}`)
      return { ...object.meta, locator: { bytes: object.bytes }, backend: 'memory' } as unknown as Awaited<ReturnType<Objects['getObject']>>
    },
    read: async function * (object) {
      yield (object.locator as unknown as { bytes: Buffer }).bytes
    },
    putObject: async (scope, bucket, key, body, options) => {
      if (scope.tenant?.role === 'reader') throw new BkgError('AccessDenied', 403, 'a reader credential cannot write or delete objects')
      const target = bucketOf(scope.namespace, bucket)
      const parts: Uint8Array[] = []
      for await (const part of body) parts.push(part)
      const bytes = Buffer.concat(parts)
      const meta = { bucket, key, size: bytes.length, etag: 'etag', contentType: options.contentType, metadata: options.metadata, checksums: {}, updatedAt: new Date().toISOString() }
      target.set(key, { meta, bytes })
      return meta
    }
  }
  return { objects }
}

export function fakeServices (): McpServices & { sandboxes: FakeSandboxes } {
  return { sandboxes: new FakeSandboxes(), peers: fakePeers, models: fakeModels(), events: fakeEvents(), storage: fakeStorage() }
}
