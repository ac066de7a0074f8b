import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { TOPIC_NAME, type PubsubMessage, type PubsubService } from '../../pubsub/index.ts'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { NodeMetrics } from '../../metrics/index.ts'

const TopicParams = z.object({ topic: z.string().regex(TOPIC_NAME, 'topic: 1-128 characters of A-Z a-z 0-9 . _ - /') })
const MAX_MESSAGE_BYTES = 256 * 1024
/** a subscriber further behind than this is told it lagged and disconnected, not buffered forever */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024

export const pubsubRoutes: FastifyPluginAsyncZod<{ pubsub: PubsubService, metrics: NodeMetrics }> = async (app, { pubsub, metrics }) => {
  app.get('/api/v1/pubsub/topics', {
    config: { access: 'admin' },
    schema: {
      summary: 'Topics this node listens to, with local listeners and mesh subscribers',
      tags: ['pubsub'],
      response: { 200: z.array(z.object({ topic: z.string(), listeners: z.number(), peers: z.number() })) }
    }
  }, async () => pubsub.topics())

  app.post('/api/v1/pubsub/topics/:topic/messages', {
    config: { access: 'admin' },
    schema: {
      summary: 'Publish a message to every subscriber of a topic in the mesh',
      tags: ['pubsub'],
      params: TopicParams,
      body: z.object({
        data: z.string().max(MAX_MESSAGE_BYTES),
        encoding: z.enum(['utf8', 'base64']).default('utf8')
      }).strict(),
      response: { 200: z.object({ topic: z.string(), bytes: z.number(), recipients: z.number(), publishedAt: z.number() }) }
    }
  }, async (request) => {
    const bytes = Buffer.from(request.body.data, request.body.encoding)
    if (bytes.byteLength > MAX_MESSAGE_BYTES) throw new BkgError('body_too_large', 413, `messages are limited to ${MAX_MESSAGE_BYTES} bytes`)
    const publishedAt = Date.now()
    const { recipients } = await pubsub.publish(request.params.topic, bytes)
    metrics.gossipMessages.inc({ direction: 'out', topic: 'bkg/pubsub' })
    return { topic: request.params.topic, bytes: bytes.byteLength, recipients, publishedAt }
  })

  app.get('/api/v1/pubsub/topics/:topic/messages', {
    config: { access: 'admin' },
    schema: {
      summary: 'Server-sent events: every message of the topic from now on (event `message`, JSON data)',
      tags: ['pubsub'],
      params: TopicParams
    }
  }, async (request, reply) => {
    const raw = reply.raw
    reply.hijack()
    raw.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
    let closed = false
    const send = (event: string, data: unknown): void => {
      if (closed) return
      raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
      if (raw.writableLength > MAX_BUFFERED_BYTES) {
        closed = true
        raw.end(`event: lagged\ndata: ${JSON.stringify({ message: 'subscriber fell too far behind; reconnect' })}\n\n`)
        stop()
      }
    }
    const stop = pubsub.subscribe(request.params.topic, (message: PubsubMessage) => {
      send('message', {
        topic: message.topic,
        from: message.from,
        seqno: message.seqno,
        receivedAt: message.receivedAt,
        data: Buffer.from(message.data).toString('base64')
      })
    })
    const heartbeat = setInterval(() => { if (!closed) raw.write(': heartbeat\n\n') }, 15_000)
    heartbeat.unref()
    raw.on('close', () => {
      closed = true
      clearInterval(heartbeat)
      stop()
    })
    send('subscribed', { topic: request.params.topic })
  })
}
