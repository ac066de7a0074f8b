import type { FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import type { WebSocket } from 'ws'
import { z } from 'zod'
import { BkgError } from '../../../lib/bkg-error.ts'
import { PolicyInput, type ExecInput, type ExecOptions, type ExecResult, type OutputChunk, type SandboxApi } from '../../sandbox/index.ts'

/** a run's body: code or module, files and stdin (base64 makes a 32 MiB module ~43 MiB of JSON) */
const RUN_BODY_LIMIT = 48 * 1024 * 1024
/** a WebSocket client that reads nothing while this much output waits is cut */
const MAX_STREAM_BUFFERED = 8 * 1024 * 1024
/** stdin sent over the WebSocket that the guest has not read yet, at most */
const MAX_STREAM_STDIN_QUEUED = 4 * 1024 * 1024

const Language = z.enum(['js', 'python', 'wasm'])
const SandboxId = z.string().regex(/^sbx_[0-9a-f]{16}$/, 'a sandbox id: sbx_ and 16 hex digits')
const SnapshotId = z.string().regex(/^snap_[0-9a-f]{16}$/, 'a snapshot id: snap_ and 16 hex digits')
const Base64 = z.string().max(RUN_BODY_LIMIT).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64')

/** Bytes in JSON: a string is UTF-8 text; binary content is `{ encoding: 'base64', data }`. */
const Content = z.union([
  z.string(),
  z.object({ encoding: z.enum(['utf8', 'base64']), data: z.string() }).strict()
])
type Content = z.infer<typeof Content>

const ContentOut = z.object({ encoding: z.enum(['utf8', 'base64']), data: z.string() })

const ExecBody = z.object({
  code: z.string().optional(),
  /** a WASI preview1 module, base64 */
  module: Base64.optional(),
  stdin: Content.optional(),
  files: z.record(z.string(), Content).optional(),
  args: z.array(z.string()).optional(),
  timeoutMs: z.number().int().positive().optional()
}).strict()

const RunBody = ExecBody.extend({
  language: Language.default('js'),
  namespace: z.string().optional(),
  policy: PolicyInput.optional()
}).strict()

const CreateBody = z.object({
  namespace: z.string().optional(),
  language: Language,
  mode: z.enum(['quick', 'persistent']).default('persistent'),
  policy: PolicyInput.optional()
}).strict()

const Policy = z.object({ timeoutMs: z.number(), memoryBytes: z.number(), outputBytes: z.number(), env: z.record(z.string(), z.string()) })
const Snapshot = z.object({ id: z.string(), createdAt: z.string(), memoryBytes: z.number(), files: z.number(), storedBytes: z.number() })
const Sandbox = z.object({
  id: z.string(),
  namespace: z.string(),
  language: Language,
  mode: z.enum(['quick', 'persistent']),
  policy: Policy,
  state: z.enum(['idle', 'running', 'stopped']),
  createdAt: z.string(),
  metrics: z.object({ cpuMs: z.number(), peakMemoryBytes: z.number(), executions: z.number(), snapshots: z.number() }),
  snapshots: z.array(Snapshot),
  origin: z.string().nullable()
})

const ExecOut = z.object({
  exitCode: z.number().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  reason: z.enum(['timeout', 'memory', 'output', 'cancelled']).optional(),
  error: z.object({ name: z.string(), message: z.string(), stack: z.string().optional() }).optional(),
  cpuMs: z.number(),
  wallMs: z.number(),
  memoryBytes: z.number(),
  files: z.record(z.string(), ContentOut),
  /** changed files that did not fit in the output limit */
  filesOmitted: z.array(z.string()).optional(),
  /** a persistent guest's worker was ended: the sandbox resumes from its last snapshot */
  stateLost: z.boolean().optional()
})

const IdParams = z.object({ id: SandboxId }).strict()

const utf8 = new TextDecoder('utf-8', { fatal: true })

function bytesOf (content: Content, field: string): Uint8Array {
  if (typeof content === 'string') return new TextEncoder().encode(content)
  if (content.encoding === 'utf8') return new TextEncoder().encode(content.data)
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(content.data)) throw new BkgError('invalid_input', 400, `${field}: data is not base64`)
  return Buffer.from(content.data, 'base64')
}

function contentOf (bytes: Uint8Array): z.infer<typeof ContentOut> {
  try {
    return { encoding: 'utf8', data: utf8.decode(bytes) }
  } catch {
    return { encoding: 'base64', data: Buffer.from(bytes).toString('base64') }
  }
}

/** The JSON body of a run as the service takes it. */
export function execInputOf (body: z.infer<typeof ExecBody>): ExecInput {
  return {
    code: body.code,
    module: body.module != null ? Buffer.from(body.module, 'base64') : undefined,
    stdin: body.stdin != null ? bytesOf(body.stdin, 'stdin') : undefined,
    files: body.files != null ? Object.fromEntries(Object.entries(body.files).map(([path, content]) => [path, bytesOf(content, `files[${path}]`)])) : undefined,
    args: body.args,
    timeoutMs: body.timeoutMs
  }
}

export function execOut (result: ExecResult): z.infer<typeof ExecOut> {
  return { ...result, files: Object.fromEntries(Object.entries(result.files).map(([path, bytes]) => [path, contentOf(bytes)])) }
}

/**
 * `/api/v1/sandboxes`: create, run, snapshot, restore, fork, stop and delete sandboxes; a
 * namespace token drives only its namespace's. `WS /api/v1/sandboxes/:id/stream` runs code with
 * output streamed live and stdin taken from the client (docs/api.md, "Sandboxes").
 */
export const sandboxRoutes: FastifyPluginAsyncZod<{ sandboxes: SandboxApi }> = async (app, { sandboxes }) => {
  const tags = ['sandboxes']

  app.post('/api/v1/sandboxes', {
    config: { access: 'token' },
    schema: {
      summary: 'Create a sandbox (quick: each exec in a fresh guest; persistent: state kept, snapshots, forks)',
      tags,
      body: CreateBody,
      response: { 201: Sandbox }
    }
  }, async (request, reply) => reply.status(201).send(await sandboxes.create(request.principal!, request.body)))

  app.get('/api/v1/sandboxes', {
    config: { access: 'token' },
    schema: { summary: 'The sandboxes this token may see, with their metrics and snapshots', tags, response: { 200: z.object({ sandboxes: z.array(Sandbox) }) } }
  }, async (request) => ({ sandboxes: sandboxes.list(request.principal!) }))

  app.get('/api/v1/sandboxes/:id', {
    config: { access: 'token' },
    schema: { summary: 'One sandbox: state, policy, metrics (CPU ms, peak memory, executions, snapshots)', tags, params: IdParams, response: { 200: Sandbox } }
  }, async (request) => sandboxes.get(request.principal!, request.params.id))

  app.post('/api/v1/sandboxes/run', {
    config: { access: 'token' },
    bodyLimit: RUN_BODY_LIMIT,
    schema: {
      summary: 'Run code once in a fresh guest from the warm pool (quick mode)',
      description: '`code` for js and python, `module` (base64 WASI preview1) for wasm. Answers when the run has ended: exit code, output, the reason when a limit ended it, CPU time and peak memory.',
      tags,
      body: RunBody,
      response: { 200: ExecOut }
    }
  }, async (request, reply) => {
    const { language, namespace, policy, ...body } = request.body
    const input = { ...execInputOf(body), language, namespace, policy }
    return await answerRun(request, reply, async (options) => await sandboxes.run(request.principal!, input, options))
  })

  app.post('/api/v1/sandboxes/:id/exec', {
    config: { access: 'token' },
    bodyLimit: RUN_BODY_LIMIT,
    schema: { summary: 'Run code in a sandbox (a persistent one keeps what the code leaves)', tags, params: IdParams, body: ExecBody, response: { 200: ExecOut } }
  }, async (request, reply) => {
    const input = execInputOf(request.body)
    return await answerRun(request, reply, async (options) => await sandboxes.exec(request.principal!, request.params.id, input, options))
  })

  app.post('/api/v1/sandboxes/:id/snapshots', {
    config: { access: 'token' },
    schema: {
      summary: 'Snapshot a persistent sandbox between runs (memory image and files, content-addressed)',
      tags,
      params: IdParams,
      response: { 201: Snapshot.extend({ snapshotId: z.string() }) }
    }
  }, async (request, reply) => {
    const snapshot = await sandboxes.snapshot(request.principal!, request.params.id)
    return reply.status(201).send({ snapshotId: snapshot.id, ...snapshot })
  })

  app.post('/api/v1/sandboxes/:id/restore', {
    config: { access: 'token' },
    schema: { summary: 'Go back to an earlier snapshot of this sandbox', tags, params: IdParams, body: z.object({ snapshotId: SnapshotId }).strict(), response: { 200: Sandbox } }
  }, async (request) => await sandboxes.restore(request.principal!, request.params.id, request.body.snapshotId))

  app.post('/api/v1/sandboxes/:id/fork', {
    config: { access: 'token' },
    schema: {
      summary: 'New sandboxes from a snapshot (default: one taken now), each going its own way',
      tags,
      params: IdParams,
      body: z.object({ snapshotId: SnapshotId.optional(), count: z.number().int().min(1).max(16).default(1) }).strict().default({ count: 1 }),
      response: { 201: z.object({ sandboxes: z.array(Sandbox) }) }
    }
  }, async (request, reply) => reply.status(201).send({ sandboxes: await sandboxes.fork(request.principal!, request.params.id, request.body) }))

  app.post('/api/v1/sandboxes/:id/stop', {
    config: { access: 'token' },
    schema: { summary: 'Snapshot a persistent sandbox and free its guest; the next exec resumes from there', tags, params: IdParams, response: { 200: Sandbox } }
  }, async (request) => await sandboxes.stopSandbox(request.principal!, request.params.id))

  app.delete('/api/v1/sandboxes/:id', {
    config: { access: 'token' },
    schema: { summary: 'Delete a sandbox and the snapshots no fork still comes from', tags, params: IdParams }
  }, async (request, reply) => {
    await sandboxes.remove(request.principal!, request.params.id)
    return reply.status(204).send()
  })

  app.route({
    method: 'GET',
    url: '/api/v1/sandboxes/:id/stream',
    config: { access: 'token' },
    schema: { summary: 'WebSocket: run code with output streamed live and stdin from the client (docs/api.md)', tags, params: IdParams, hide: true },
    handler: async () => {
      throw new BkgError('upgrade_required', 426, 'this is a WebSocket endpoint: connect with Upgrade: websocket')
    },
    // the sandbox is looked up before the upgrade: a wrong id or namespace is a plain 404
    preHandler: async (request) => {
      sandboxes.get(request.principal!, (request.params as { id: string }).id)
    },
    onSend: async (request, reply, payload) => {
      if (request.ws) reply.header('connection', 'close')
      return payload
    },
    wsHandler: (socket: WebSocket, request) => {
      streamSession(socket, sandboxes, request.principal!, (request.params as { id: string }).id)
    }
  })
}

/**
 * A run's answer: one JSON object when it has ended, or with `Accept: application/x-ndjson` a
 * line per output chunk as the guest writes (`{"type":"stdout","data":…}`) and the result last
 * (`{"type":"exit",…}`). A client that goes away cancels its run.
 */
async function answerRun (request: FastifyRequest, reply: FastifyReply, start: (options: ExecOptions) => Promise<ExecResult>): Promise<z.infer<typeof ExecOut> | FastifyReply> {
  const controller = new AbortController()
  const onClose = (): void => { if (!reply.raw.writableEnded) controller.abort(new BkgError('cancelled', 499, 'the client closed the connection')) }
  reply.raw.once('close', onClose)
  const streaming = (request.headers.accept ?? '').includes('application/x-ndjson')
  try {
    if (!streaming) return execOut(await start({ signal: controller.signal }))
    const raw = reply.raw
    let started = false
    const write = (message: unknown): void => {
      if (!started) {
        reply.hijack()
        raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' })
        started = true
      }
      raw.write(JSON.stringify(message) + '\n')
      // output nobody reads is not buffered without end: the run is cancelled instead
      if (raw.writableLength > MAX_STREAM_BUFFERED) controller.abort(new BkgError('cancelled', 499, 'the client did not read its output'))
    }
    let result: ExecResult
    try {
      result = await start({ signal: controller.signal, onOutput: (chunk) => { write({ type: chunk.stream, data: new TextDecoder().decode(chunk.data) }) } })
    } catch (err) {
      // a refusal before any output is a plain JSON error with its status
      if (!started) throw err
      const refusal = err instanceof BkgError ? err : new BkgError('internal', 500, 'the run failed')
      raw.end(JSON.stringify({ type: 'error', error: { code: refusal.code, message: refusal.message } }) + '\n')
      return reply
    }
    write({ type: 'exit', ...execOut(result) })
    raw.end()
    return reply
  } finally {
    reply.raw.off('close', onClose)
  }
}

const StreamMessage = z.discriminatedUnion('type', [
  ExecBody.extend({ type: z.literal('exec') }).strict(),
  z.object({ type: z.literal('stdin'), data: z.string() }).strict(),
  z.object({ type: z.literal('stdin-end') }).strict(),
  z.object({ type: z.literal('cancel') }).strict()
])

/**
 * One WebSocket: `{type:'exec', code, …}` starts a run; `{type:'stdin', data}` and
 * `{type:'stdin-end'}` feed its stdin; `{type:'cancel'}` ends it. The server sends
 * `{type:'stdout'|'stderr', data}` as the guest writes and `{type:'exit', …result}` at the end.
 */
function streamSession (socket: WebSocket, sandboxes: SandboxApi, principal: Parameters<SandboxApi['exec']>[0], id: string): void {
  let run: { controller: AbortController, stdin: StdinQueue } | null = null
  const send = (message: unknown): void => {
    if (socket.readyState !== socket.OPEN) return
    if (socket.bufferedAmount > MAX_STREAM_BUFFERED) {
      run?.controller.abort(new BkgError('cancelled', 499, 'the client did not read its output'))
      socket.close(1008, 'output not read')
      return
    }
    socket.send(JSON.stringify(message))
  }
  socket.on('message', (raw) => {
    let message: z.infer<typeof StreamMessage>
    try {
      const parsed = StreamMessage.safeParse(JSON.parse(String(raw)))
      if (!parsed.success) throw new BkgError('invalid_input', 400, parsed.error.issues[0].message)
      message = parsed.data
    } catch (err) {
      send({ type: 'error', error: { code: 'invalid_input', message: err instanceof BkgError ? err.message : 'frames are JSON objects (docs/api.md)' } })
      return
    }
    if (message.type === 'exec') {
      if (run != null) {
        send({ type: 'error', error: { code: 'sandbox_busy', message: 'a run is going on in this stream' } })
        return
      }
      const { type: _type, ...body } = message
      const current = { controller: new AbortController(), stdin: new StdinQueue() }
      run = current
      let input: ExecInput
      try {
        input = execInputOf(body)
      } catch (err) {
        run = null
        send({ type: 'error', error: { code: (err as BkgError).code ?? 'invalid_input', message: (err as Error).message } })
        return
      }
      // a run given its stdin in the exec frame reads that; otherwise it reads what the client sends
      const onOutput = (chunk: OutputChunk): void => { send({ type: chunk.stream, data: new TextDecoder().decode(chunk.data) }) }
      sandboxes.exec(principal, id, input, { onOutput, signal: current.controller.signal, stdin: input.stdin != null ? undefined : current.stdin })
        .then((result) => { send({ type: 'exit', ...execOut(result) }) })
        .catch((err: unknown) => {
          const refusal = err instanceof BkgError ? err : new BkgError('internal', 500, 'the run failed')
          send({ type: 'error', error: { code: refusal.code, message: refusal.message } })
        })
        .finally(() => {
          current.stdin.end()
          if (run === current) run = null
        })
      return
    }
    if (run == null) {
      send({ type: 'error', error: { code: 'no_run', message: 'no run is going on: send {"type":"exec",…} first' } })
      return
    }
    if (message.type === 'stdin') {
      // stdin a guest does not read is not buffered without end: the client is told to wait
      if (!run.stdin.push(new TextEncoder().encode(message.data))) send({ type: 'error', error: { code: 'stdin_full', message: `more than ${MAX_STREAM_STDIN_QUEUED} bytes of stdin wait unread; send more once the guest reads` } })
    } else if (message.type === 'stdin-end') run.stdin.end()
    else run.controller.abort(new BkgError('cancelled', 499, 'cancelled by the client'))
  })
  socket.on('close', () => {
    run?.controller.abort(new BkgError('cancelled', 499, 'the client closed the stream'))
  })
}

/** Stdin chunks from the client, as the async iterable the runtime reads; ends with stdin-end or the run. */
class StdinQueue implements AsyncIterable<Uint8Array> {
  private readonly chunks: Uint8Array[] = []
  private queued = 0
  private ended = false
  private wake: (() => void) | null = null

  /** false when the guest has not read what is queued and this chunk would pass the bound */
  push (chunk: Uint8Array): boolean {
    if (this.ended) return true
    if (this.queued + chunk.byteLength > MAX_STREAM_STDIN_QUEUED) return false
    this.queued += chunk.byteLength
    this.chunks.push(chunk)
    this.wake?.()
    return true
  }

  end (): void {
    this.ended = true
    this.wake?.()
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<Uint8Array> {
    while (true) {
      const chunk = this.chunks.shift()
      if (chunk != null) {
        this.queued -= chunk.byteLength
        yield chunk
        continue
      }
      if (this.ended) return
      await new Promise<void>((resolve) => { this.wake = resolve })
      this.wake = null
    }
  }
}
