import { z } from 'zod'
import { NAMESPACE_PATTERN } from '../../ca/roles.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { EventCursor, EventNamespace, EventPayload, EventType } from '../../protocols/events.ts'
import { ModelName, ModelVersion } from '../../protocols/model-package.ts'
import { msUntilExpiry, type Principal } from '../auth/index.ts'
import type { StoredEvent } from '../events/index.ts'
import { catalogSummary, modelSummary } from '../models/index.ts'
import type { ObjectMeta, StorageScope } from '../storage/index.ts'
import { DEFAULT_GET_MAX_BYTES, MAX_GET_MAX_BYTES, MAX_PULL_WAIT_MS, PULL_PROGRESS_MS } from './constants.ts'
import { RunProgress } from './progress.ts'
import type { McpServices } from './services.ts'
import { Base64, defineTool, requireAdmin, type ToolDefinition } from './tool-kit.ts'

const READ_ONLY = { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false }

export function peerTools (peers: NonNullable<McpServices['peers']>): ToolDefinition[] {
  return [defineTool({
    name: 'peers_list',
    title: 'List peers',
    description: 'Admitted peers this node has an open connection to: name, roles, namespaces, addresses, connection (direction, direct or relayed) and latency (as GET /api/v1/peers).',
    input: z.strictObject({ ping: z.boolean().optional().meta({ default: true }).describe('measure each peer\'s latency (default true; false answers at once)') }),
    output: z.object({
      peers: z.array(z.object({
        peerId: z.string(),
        name: z.string(),
        roles: z.array(z.string()),
        namespaces: z.array(z.string()),
        addrs: z.array(z.string()),
        connection: z.object({ direction: z.string(), transport: z.string(), remoteAddr: z.string(), openedAt: z.string() }),
        latencyMs: z.number().nullable()
      }))
    }),
    // pinging reaches other machines
    annotations: { ...READ_ONLY, openWorldHint: true },
    run: async (args) => ({ peers: await peers.list(args.ping ?? true) })
  })]
}

const PullJobOut = z.object({
  id: z.string(),
  state: z.enum(['resolving', 'fetching', 'verifying', 'done', 'failed']),
  name: z.string(),
  version: z.string().nullable(),
  totalBytes: z.number(),
  bytes: z.number(),
  peers: z.array(z.string()),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  startedAt: z.string(),
  finishedAt: z.string().nullable()
})

const WaitMs = z.number().int().min(0).max(MAX_PULL_WAIT_MS)

export function modelTools (models: NonNullable<McpServices['models']>): ToolDefinition[] {
  /** waits for a pull (with progress) until it finishes, `waitMs` passes, the call is cancelled or the token expires */
  async function follow (id: string, waitMs: number, principal: Principal, progress: RunProgress, signal: AbortSignal): Promise<Record<string, unknown>> {
    const deadline = Date.now() + Math.min(waitMs, msUntilExpiry(principal))
    let job = await models.waitForJob(id, 0)
    while (job != null && job.finishedAt == null && !signal.aborted && Date.now() < deadline) {
      progress.note(`${job.state}: ${job.bytes} of ${job.totalBytes} bytes from ${job.peers.length} peer(s)`, job.bytes, job.totalBytes > 0 ? job.totalBytes : undefined)
      job = await models.waitForJob(id, Math.min(PULL_PROGRESS_MS, Math.max(0, deadline - Date.now())))
    }
    if (job == null) throw new BkgError('pull_not_found', 404, `no pull ${id}`)
    return { ...job }
  }

  return [
    defineTool({
      name: 'models_list',
      title: 'List held models',
      description: 'Models this node holds, verified: name, version, architecture, licence, publisher, size, files and the directory they are in (as GET /api/v1/models).',
      input: z.strictObject({}),
      output: z.object({ models: z.array(z.object({ name: z.string(), version: z.string(), totalSize: z.number(), location: z.string() })) }),
      annotations: READ_ONLY,
      run: async () => ({ models: models.list().map(modelSummary) })
    }),
    defineTool({
      name: 'models_catalog',
      title: 'Models announced in the mesh',
      description: 'Models other nodes announced (signed manifests, verified on arrival): what models_pull can fetch.',
      input: z.strictObject({}),
      output: z.object({ models: z.array(z.object({ name: z.string(), version: z.string(), publisher: z.string(), origin: z.string(), totalSize: z.number(), seenAt: z.string() })) }),
      annotations: READ_ONLY,
      run: async () => ({ models: models.catalogEntries().map(catalogSummary) })
    }),
    defineTool({
      name: 'models_pull',
      title: 'Pull a model',
      description: 'Starts pulling a model from its providers in the mesh (the newest version when none is given), or joins the pull already running for it, and returns the pull job. ' +
        'With waitMs it waits up to that long for the pull to finish, sending progress notifications; cancelling the call stops the waiting, not the pull. Needs the node admin token.',
      input: z.strictObject({
        name: ModelName,
        version: ModelVersion.optional(),
        waitMs: WaitMs.optional().meta({ default: 0 }).describe('wait up to this long for the pull to finish (default 0: return the job at once)')
      }),
      output: PullJobOut,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: true },
      run: async (args, { caller, ctx }) => {
        requireAdmin(caller, 'models_pull')
        const job = models.startPull(args.name, args.version ?? null)
        const progress = new RunProgress(ctx)
        try {
          return await follow(job.id, args.waitMs ?? 0, caller.principal, progress, ctx.mcpReq.signal)
        } finally {
          progress.stop()
        }
      }
    }),
    defineTool({
      name: 'models_pull_status',
      title: 'Progress of a pull',
      description: 'A pull job by id: state, bytes, providers, error. With waitMs, answers as soon as the pull finishes, at the latest after waitMs (with progress notifications).',
      input: z.strictObject({ id: z.string().min(1).max(64), waitMs: WaitMs.optional().meta({ default: 0 }) }),
      output: PullJobOut,
      annotations: READ_ONLY,
      run: async (args, { caller, ctx }) => {
        const progress = new RunProgress(ctx)
        try {
          return await follow(args.id, args.waitMs ?? 0, caller.principal, progress, ctx.mcpReq.signal)
        } finally {
          progress.stop()
        }
      }
    })
  ]
}

function eventOut (event: StoredEvent): Record<string, unknown> {
  const { id, namespace, type, payload, origin, seq, prevSeq, hlc, sig, localId, receivedAt } = event
  return { id, namespace, type, payload, origin, seq, prevSeq, hlc, sig, localId, receivedAt }
}

const EventOut = z.object({ id: z.string(), namespace: z.string(), type: z.string(), payload: z.unknown(), origin: z.string(), seq: z.number(), localId: z.number(), receivedAt: z.string() })

export function eventTools (events: NonNullable<McpServices['events']>): ToolDefinition[] {
  return [
    defineTool({
      name: 'events_publish',
      title: 'Publish an event',
      description: 'Publishes a signed event to a namespace (the node signs it as its origin, stores it and gossips it to the namespace\'s nodes); answers once it is stored. Needs a writer or admin token for the namespace, or the node admin token.',
      input: z.strictObject({ namespace: EventNamespace, type: EventType, payload: EventPayload.describe('any JSON value (at most 64 KiB)') }),
      output: EventOut,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
      run: async (args, { caller }) => {
        const [stored] = await events.publish(caller.principal, [{ namespace: args.namespace, type: args.type, payload: args.payload }])
        return eventOut(stored)
      }
    }),
    defineTool({
      name: 'events_query',
      title: 'Query events',
      description: 'Events of a namespace the token may read, in the order they arrived at this node; page with `after` = the `next` of the previous answer.',
      input: z.strictObject({
        namespace: EventNamespace,
        after: EventCursor.optional().describe('an event id or a localId (exclusive)'),
        type: EventType.optional(),
        limit: z.number().int().min(1).max(1000).optional().meta({ default: 100 })
      }),
      output: z.object({ events: z.array(EventOut), next: z.string().nullable() }),
      annotations: READ_ONLY,
      run: async (args, { caller }) => {
        const limit = args.limit ?? 100
        const page = await events.list(caller.principal, {
          namespace: args.namespace,
          limit,
          ...(args.after != null ? { after: args.after } : {}),
          ...(args.type != null ? { type: args.type } : {})
        })
        return { events: page.map(eventOut), next: page.length === limit ? String(page.at(-1)!.localId) : null }
      }
    })
  ]
}

const Namespace = z.string().regex(NAMESPACE_PATTERN, 'namespace: 1-63 of a-z 0-9 . _ -')
const Bucket = z.string().min(1).max(63)
const Key = z.string().min(1).max(1024)

/** The caller's storage namespace: a token's own, or (node admin token) the one it names; as the REST routes decide. */
function scopeOf (principal: Principal, namespace: string | undefined): StorageScope {
  if (principal.kind === 'node-admin') {
    if (namespace == null) throw new BkgError('invalid_request', 400, 'the node admin token must name a namespace')
    return { tenant: null, namespace }
  }
  if (namespace != null && namespace !== principal.namespace) throw new BkgError('forbidden', 403, `this token is for namespace ${principal.namespace}, not ${namespace}`)
  return { tenant: { role: principal.role, namespace: principal.namespace }, namespace: principal.namespace }
}

/** one chunk as the body stream putObject reads */
async function * once (bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}

function objectOut (object: ObjectMeta): Record<string, unknown> {
  const { bucket, key, size, etag, contentType, metadata, checksums, updatedAt } = object
  return { bucket, key, size, etag, contentType, metadata, checksums, updatedAt }
}

const ObjectOut = z.object({ bucket: z.string(), key: z.string(), size: z.number(), etag: z.string(), contentType: z.string(), updatedAt: z.string() })
const NamespaceArg = Namespace.optional().describe('the namespace (a namespace token\'s own by default; the node admin token must name one)')

export function storageTools (storage: NonNullable<McpServices['storage']>): ToolDefinition[] {
  const objects = storage.objects
  return [
    defineTool({
      name: 'storage_list',
      title: 'List buckets or objects',
      description: 'Without bucket: the namespace\'s buckets. With bucket: its objects in key order (prefix, delimiter for common prefixes, after for paging).',
      input: z.strictObject({
        namespace: NamespaceArg,
        bucket: Bucket.optional(),
        prefix: z.string().max(1024).optional(),
        delimiter: z.string().max(16).optional(),
        after: z.string().max(1024).optional(),
        limit: z.number().int().min(1).max(1000).optional().meta({ default: 1000 })
      }),
      annotations: READ_ONLY,
      run: async (args, { caller }) => {
        const scope = scopeOf(caller.principal, args.namespace)
        if (args.bucket == null) return { buckets: await objects.listBuckets(scope) }
        const listed = await objects.list(scope, args.bucket, {
          prefix: args.prefix ?? '',
          maxKeys: args.limit ?? 1000,
          ...(args.delimiter != null ? { delimiter: args.delimiter } : {}),
          ...(args.after != null ? { after: args.after } : {})
        })
        return { objects: listed.objects.map(objectOut), prefixes: listed.prefixes, next: listed.truncated ? listed.last : null }
      }
    }),
    defineTool({
      name: 'storage_get',
      title: 'Read an object',
      description: 'An object\'s metadata and bytes: as text when they are UTF-8 (encoding auto or text), else base64. Objects larger than maxBytes are refused (read them over /api/v1/storage or /s3).',
      input: z.strictObject({
        namespace: NamespaceArg,
        bucket: Bucket,
        key: Key,
        encoding: z.enum(['auto', 'text', 'base64']).optional().meta({ default: 'auto' }),
        maxBytes: z.number().int().min(0).max(MAX_GET_MAX_BYTES).optional().meta({ default: DEFAULT_GET_MAX_BYTES })
      }),
      output: z.object({ object: ObjectOut, text: z.string().optional(), base64: z.string().optional() }),
      annotations: READ_ONLY,
      run: async (args, { caller }) => {
        const object = await objects.getObject(scopeOf(caller.principal, args.namespace), args.bucket, args.key)
        const maxBytes = args.maxBytes ?? DEFAULT_GET_MAX_BYTES
        if (object.size > maxBytes) throw new BkgError('object_too_large', 413, `${args.bucket}/${args.key} is ${object.size} bytes, more than maxBytes (${maxBytes}); read it over /api/v1/storage or /s3`)
        const parts: Uint8Array[] = []
        for await (const part of objects.read(object)) parts.push(part)
        const bytes = Buffer.concat(parts)
        const encoding = args.encoding ?? 'auto'
        if (encoding !== 'base64') {
          try {
            return { object: objectOut(object), text: new TextDecoder('utf-8', { fatal: true }).decode(bytes) }
          } catch {
            if (encoding === 'text') throw new BkgError('not_text', 422, `${args.bucket}/${args.key} is not UTF-8 text; ask for encoding base64`)
          }
        }
        return { object: objectOut(object), base64: bytes.toString('base64') }
      }
    }),
    defineTool({
      name: 'storage_put',
      title: 'Store an object',
      description: 'Stores an object (replacing one under the same key) from text or base64. The bucket must exist (storage_create_bucket). Needs a writer or admin token.',
      input: z.strictObject({
        namespace: NamespaceArg,
        bucket: Bucket,
        key: Key,
        text: z.string().optional().describe('the content as UTF-8 text'),
        base64: Base64.optional().describe('the content as base64 (binary data)'),
        contentType: z.string().min(1).max(256).optional().describe('default text/plain; charset=utf-8 for text, application/octet-stream for base64')
      }).refine((args) => (args.text == null) !== (args.base64 == null), { message: 'give text or base64 (exactly one)' }),
      output: ObjectOut,
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
      run: async (args, { caller }) => {
        const bytes = args.text != null ? Buffer.from(args.text, 'utf8') : Buffer.from(args.base64 ?? '', 'base64')
        const stored = await objects.putObject(scopeOf(caller.principal, args.namespace), args.bucket, args.key, once(bytes), {
          contentType: args.contentType ?? (args.text != null ? 'text/plain; charset=utf-8' : 'application/octet-stream'),
          metadata: {},
          expected: { checksums: {} },
          algorithms: ['sha256']
        })
        return objectOut(stored)
      }
    }),
    defineTool({
      name: 'storage_create_bucket',
      title: 'Create a bucket',
      description: 'Creates a bucket in the namespace (a namespace admin token or the node admin token).',
      input: z.strictObject({ namespace: NamespaceArg, name: Bucket }),
      output: z.object({ name: z.string() }),
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
      run: async (args, { caller }) => {
        await objects.createBucket(scopeOf(caller.principal, args.namespace), args.name)
        return { name: args.name }
      }
    })
  ]
}
