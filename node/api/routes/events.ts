import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { EventCursor, EventNamespace, EventPayload, EventType } from '../../../protocols/events.ts'
import { whenExpired } from '../../auth/index.ts'
import { EventSubscription, parseFilter, type EventSelector, type EventService, type StoredEvent } from '../../events/index.ts'

const MAX_BATCH = 1000
/** a subscriber further behind than this is told it lagged and disconnected, not buffered forever */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024
const HEARTBEAT_MS = 15_000

const NewEvent = z.object({ namespace: EventNamespace, type: EventType, payload: EventPayload }).strict()

const EventOut = z.object({
  id: z.string(),
  namespace: z.string(),
  type: z.string(),
  payload: z.unknown(),
  origin: z.string(),
  seq: z.number(),
  prevSeq: z.number(),
  hlc: z.string(),
  sig: z.string(),
  localId: z.number(),
  receivedAt: z.string()
})

const ListQuery = z.object({
  namespace: EventNamespace,
  after: EventCursor.optional(),
  type: EventType.optional(),
  limit: z.coerce.number().int().min(1).max(MAX_BATCH).default(100)
}).strict()

const StreamQuery = z.object({
  namespace: EventNamespace,
  after: EventCursor.optional(),
  type: EventType.optional(),
  filter: z.union([z.string().max(512), z.array(z.string().max(512)).max(16)]).optional()
}).strict()

function out (event: StoredEvent): z.infer<typeof EventOut> {
  const { id, namespace, type, payload, origin, seq, prevSeq, hlc, sig, localId, receivedAt } = event
  return { id, namespace, type, payload, origin, seq, prevSeq, hlc, sig, localId, receivedAt }
}

export function selectorOf (query: { namespace: string, type?: string, filter?: string | string[] }): EventSelector {
  const texts = query.filter == null ? [] : Array.isArray(query.filter) ? query.filter : [query.filter]
  return { namespace: query.namespace, type: query.type, filters: texts.map(parseFilter) }
}

export const eventRoutes: FastifyPluginAsyncZod<{ events: EventService }> = async (app, { events }) => {
  app.post('/api/v1/events', {
    config: { access: 'token' },
    schema: {
      summary: 'Publish a signed event (or a batch of up to 1000) to a namespace; answers once stored',
      description: 'A writer or admin token for the namespace, or the node admin token. The node signs the event as its origin, stores it (row-level security checks the namespace) and gossips it to the peers certified for the namespace.',
      tags: ['events'],
      body: z.union([NewEvent, z.object({ events: z.array(NewEvent).min(1).max(MAX_BATCH) }).strict()]),
      response: { 201: z.union([EventOut, z.object({ events: z.array(EventOut) })]) }
    }
  }, async (request, reply) => {
    const body = request.body
    const batch = 'events' in body
    const stored = await events.publish(request.principal!, 'events' in body ? body.events : [body])
    return reply.status(201).send(batch ? { events: stored.map(out) } : out(stored[0]))
  })

  app.get('/api/v1/events', {
    config: { access: 'token' },
    schema: {
      summary: 'Events of a namespace the token may see, in the order they arrived here',
      description: '`after` is an event id or a `localId` (exclusive); page with the last `localId` returned.',
      tags: ['events'],
      querystring: ListQuery,
      response: { 200: z.object({ events: z.array(EventOut), next: z.string().nullable() }) }
    }
  }, async (request) => {
    const page = await events.list(request.principal!, request.query)
    return { events: page.map(out), next: page.length === request.query.limit ? String(page.at(-1)!.localId) : null }
  })

  app.get('/api/v1/events/stream', {
    config: { access: 'token' },
    schema: {
      summary: 'Server-sent events: a namespace\'s events, optionally filtered, from a cursor on',
      description: 'Each SSE message is event `event` with the event as JSON and `id:` its localId, so a reconnecting EventSource resumes with Last-Event-ID. `filter` takes `field=op.value` on payload fields (eq, neq, gt, gte, lt, lte, in). A subscriber that falls more than 4 MiB behind receives `lagged` and is disconnected.',
      tags: ['events'],
      querystring: StreamQuery
    }
  }, async (request, reply) => {
    const principal = request.principal!
    const lastEventId = request.headers['last-event-id']
    const raw = reply.raw
    let closed = false
    const subscription = new EventSubscription({
      events,
      principal: () => principal,
      selector: selectorOf(request.query),
      // a reconnecting EventSource sends back the last id it was given: it is checked like ?after=, never ignored
      after: typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : request.query.after,
      deliver: (event) => {
        if (closed) return true
        raw.write(`id: ${event.localId}\nevent: event\ndata: ${JSON.stringify(out(event))}\n\n`)
        if (raw.writableLength > MAX_BUFFERED_BYTES) lagged(event.localId)
        return raw.writableLength === 0
      },
      drained: async () => { await new Promise((resolve) => { raw.once('drain', resolve); raw.once('close', resolve) }) },
      onLagged: (lastLocalId) => lagged(lastLocalId)
    })
    // refusals (namespace, cursor) are still plain JSON errors: the stream has not started
    await subscription.start()
    reply.hijack()
    raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    raw.write(`event: subscribed\ndata: ${JSON.stringify({ namespace: request.query.namespace })}\n\n`)
    const heartbeat = setInterval(() => { if (!closed) raw.write(': heartbeat\n\n') }, HEARTBEAT_MS)
    heartbeat.unref()
    // a stream ends with its token: the client reconnects with a fresh one and Last-Event-ID
    const cancelExpiry = whenExpired(principal, () => {
      if (closed) return
      raw.end(`event: token_expired\ndata: ${JSON.stringify({ lastEventId: String(subscription.cursor), message: 'the token expired; reconnect with a fresh token and Last-Event-ID to resume' })}\n\n`)
      close()
    })
    const close = (): void => {
      if (closed) return
      closed = true
      subscription.stop()
      clearInterval(heartbeat)
      cancelExpiry()
    }
    function lagged (lastLocalId: number): void {
      if (closed) return
      raw.end(`event: lagged\ndata: ${JSON.stringify({ lastEventId: String(lastLocalId), message: 'subscriber fell too far behind; reconnect with Last-Event-ID to resume' })}\n\n`)
      close()
    }
    raw.on('close', close)
  })
}
