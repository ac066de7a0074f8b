import type { FastifyReply, FastifyRequest } from 'fastify'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { ChatEvent, ChatRequest, ChatResult, LlmApi, Provenance } from '../../llm/index.ts'

/**
 * Running a chat for an HTTP request: to its end (one JSON answer), or as Server-Sent Events
 * with backpressure. The service's event stream is pull-based, so not asking for the next event
 * pauses generation: a slow reader slows its own request and nothing queues without bound.
 */

export const SERVED_BY_HEADER = 'x-bkg-served-by'

/** How a stream's events become SSE text (BKG's `event:` frames, or OpenAI's `data:` chunks). */
export interface SseFormat {
  /** the SSE text for one event; empty when the event shows nothing */
  event: (event: ChatEvent) => string
  /** a failure after the head was sent (before it, the request fails with its status instead) */
  error: (error: { code: string, message: string }) => string
  /** written after `done` */
  end?: string
}

/** An abort signal that fires when the client goes away before its answer has been sent. */
function clientGone (reply: FastifyReply): { signal: AbortSignal, gone: () => boolean, release: () => void, onGone: (listener: () => void) => void } {
  const controller = new AbortController()
  const listeners: Array<() => void> = []
  const onClose = (): void => {
    if (reply.raw.writableFinished) return
    controller.abort(new BkgError('cancelled', 499, 'the client closed the connection'))
    for (const listener of listeners) listener()
  }
  reply.raw.once('close', onClose)
  return {
    signal: controller.signal,
    gone: () => controller.signal.aborted,
    release: () => { reply.raw.off('close', onClose) },
    onGone: (listener) => { listeners.push(listener) }
  }
}

export function principalId (request: FastifyRequest): string | undefined {
  return request.principal?.tokenId
}

/** The chat's result once it has ended; a client that goes away first cancels it. */
export async function runChat (llm: LlmApi, request: FastifyRequest, reply: FastifyReply, chat: ChatRequest): Promise<ChatResult> {
  const client = clientGone(reply)
  const iterator = llm.chat(chat, { signal: client.signal, principal: principalId(request) })[Symbol.asyncIterator]()
  try {
    while (true) {
      const next = await iterator.next()
      if (next.done === true) break
      if (next.value.type === 'done') {
        reply.header(SERVED_BY_HEADER, next.value.result.servedBy)
        return next.value.result
      }
      if (client.gone()) break
    }
    throw new BkgError('internal', 500, 'the chat ended without a result')
  } catch (err) {
    // nobody hears the answer: not a server failure to log, whatever the service threw on abort
    if (client.gone()) throw new BkgError('cancelled', 499, 'the client closed the connection')
    throw err
  } finally {
    client.release()
    // also after `done`: the service's generator may still hold a sequence until it is closed
    await closeQuietly(iterator)
  }
}

async function closeQuietly (iterator: AsyncIterator<ChatEvent>): Promise<void> {
  try {
    await iterator.return?.()
  } catch {}
}

/** The provenance a stream's first event names (the `start`, or a `done` that came at once). */
function provenanceOf (event: ChatEvent): Provenance | null {
  if (event.type === 'start') return event.provenance
  if (event.type === 'done') return event.result
  return null
}

/**
 * Streams a chat as SSE. The first event is pulled before anything is written, so a refusal
 * (unknown model, 429 busy) is a plain JSON error with its status, and the head can name the
 * serving node. Each write that the socket does not take at once (`write` returns false) is
 * waited out ('drain') before the next event is pulled; a client that goes away aborts the
 * service's signal and returns the iterator, which ends generation.
 */
export async function streamChat (llm: LlmApi, request: FastifyRequest, reply: FastifyReply, chat: ChatRequest, format: SseFormat): Promise<FastifyReply> {
  const client = clientGone(reply)
  const raw = reply.raw
  let wake: (() => void) | null = null
  client.onGone(() => wake?.())
  const iterator = llm.chat(chat, { signal: client.signal, principal: principalId(request) })[Symbol.asyncIterator]()
  try {
    let first: IteratorResult<ChatEvent>
    try {
      first = await iterator.next()
    } catch (err) {
      if (client.gone()) throw new BkgError('cancelled', 499, 'the client closed the connection')
      throw err
    }
    if (first.done === true) throw new BkgError('internal', 500, 'the chat ended without a result')
    const provenance = provenanceOf(first.value)
    reply.hijack()
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      // proxies (nginx) would otherwise hold tokens back to fill their buffer
      'x-accel-buffering': 'no',
      ...(provenance != null ? { [SERVED_BY_HEADER]: provenance.servedBy } : {})
    })
    let event: ChatEvent = first.value
    while (true) {
      const text = format.event(event)
      if (text !== '' && !raw.write(text) && !client.gone()) {
        let resolveDrain!: () => void
        const drained = new Promise<void>((resolve) => { resolveDrain = resolve })
        wake = resolveDrain
        raw.once('drain', resolveDrain)
        await drained
        raw.off('drain', resolveDrain)
        wake = null
      }
      if (event.type === 'done') {
        raw.end(format.end ?? '')
        return reply
      }
      if (client.gone()) return reply
      let next: IteratorResult<ChatEvent>
      try {
        next = await iterator.next()
      } catch (err) {
        if (client.gone()) return reply
        const failure = err instanceof BkgError ? err : new BkgError('internal', 500, 'the chat failed')
        if (!(err instanceof BkgError)) request.log.error({ err }, 'chat stream failed')
        raw.end(format.error({ code: failure.code, message: failure.message }))
        return reply
      }
      if (next.done === true) {
        raw.end(format.error({ code: 'internal', message: 'the chat ended without a result' }))
        return reply
      }
      event = next.value
    }
  } finally {
    client.release()
    await closeQuietly(iterator)
  }
}

/** Retry-After of a busy refusal: the service's BkgError carries `retryAfterSeconds` */
export function retryAfterOf (err: unknown): number | null {
  const seconds = (err as { retryAfterSeconds?: unknown } | null)?.retryAfterSeconds
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0 ? Math.ceil(seconds) : null
}
