import type { FastifyInstance } from 'fastify'
import type { WebSocket } from 'ws'
import { z } from 'zod'
import { BkgError } from '../../../lib/bkg-error.ts'
import type { ChatEvent, ChatRequest, LlmApi } from '../../llm/index.ts'
import type { ApiKeys } from '../auth.ts'
import { tokenWebSocketRoute } from '../token-websocket.ts'
import { retryAfterOf } from '../openai/chat-stream.ts'
import { chatFields, chatRequestOf, Placement } from '../openai/request.ts'
import { chatEventOut } from './llm-shapes.ts'

/** a socket holding this much unsent output is not given the next token until it drains */
export const MAX_WS_BUFFERED = 1024 * 1024
/** how often a paused chat looks whether its socket has drained (ws has no drain event) */
const DRAIN_POLL_MS = 5
/** chats one socket may run at once (each needs its own `id`) */
export const MAX_WS_CHATS = 8
/** what a chat without an `id` is filed under: one at a time */
const NO_ID = ''
/** events read from a cancelled chat while waiting for its `done` */
const MAX_EVENTS_AFTER_CANCEL = 8

const Frame = z.discriminatedUnion('type', [
  z.object({ type: z.literal('chat'), id: z.string().min(1).max(64).optional(), ...chatFields, placement: Placement.optional() }).strict(),
  z.object({ type: z.literal('cancel'), id: z.string().min(1).max(64).optional() }).strict()
])

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/**
 * `WS /api/v1/llm/chat/ws`: the token comes in the `Authorization` header or, for browsers, as
 * `?token=`, checked before the upgrade. Frames as in docs/api.md ("Inference").
 */
export function llmSocketRoute (app: FastifyInstance, llm: LlmApi, keys: ApiKeys): void {
  tokenWebSocketRoute(app, {
    url: '/api/v1/llm/chat/ws',
    summary: 'WebSocket: chats streamed token by token (docs/api.md, "Inference")',
    tags: ['llm'],
    keys,
    onSocket: (socket: WebSocket, request) => {
      chatSocket(socket, llm, request.principal?.tokenId)
    }
  })
}

/**
 * One socket's chats: `{type:'chat', id?, …body}` starts one, `{type:'cancel', id?}` ends it (or
 * all of them without an id); each streams `start` (provenance), `token` and `done` (`result`)
 * or `error` frames carrying its `id`. A chat's next event is pulled only while the socket holds less than
 * MAX_WS_BUFFERED unsent, so a client that does not read pauses its own generation.
 */
function chatSocket (socket: WebSocket, llm: LlmApi, principal: string | undefined): void {
  const running = new Map<string, AbortController>()
  const send = (message: Record<string, unknown>): void => {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message))
  }
  const fail = (id: string | undefined, err: unknown): void => {
    const failure = err instanceof BkgError ? err : new BkgError('internal', 500, 'the chat failed')
    const retryAfter = retryAfterOf(err)
    send({ type: 'error', ...(id != null ? { id } : {}), error: { code: failure.code, message: failure.message }, ...(retryAfter != null ? { retry_after: retryAfter } : {}) })
  }

  socket.on('message', (raw) => {
    let frame: z.infer<typeof Frame>
    try {
      const parsed = Frame.safeParse(JSON.parse(String(raw)))
      if (!parsed.success) {
        const issue = parsed.error.issues[0]
        throw new BkgError('invalid_request', 400, `${issue.path.join('.') || 'frame'}: ${issue.message}`)
      }
      frame = parsed.data
    } catch (err) {
      fail(undefined, err instanceof BkgError ? err : new BkgError('invalid_request', 400, 'frames are JSON objects (docs/api.md, "Inference")'))
      return
    }
    if (frame.type === 'cancel') {
      const targets = frame.id != null ? [running.get(frame.id)] : [...running.values()]
      for (const controller of targets) controller?.abort(new BkgError('cancelled', 499, 'cancelled by the client'))
      return
    }
    const { type: _type, id, ...body } = frame
    const key = id ?? NO_ID
    if (running.has(key)) {
      fail(id, new BkgError('chat_busy', 409, id != null ? `a chat with id ${id} is running on this socket` : 'a chat is running on this socket: wait for its end, or give each chat an id'))
      return
    }
    if (running.size >= MAX_WS_CHATS) {
      fail(id, new BkgError('chat_busy', 409, `at most ${MAX_WS_CHATS} chats run at once on one socket`))
      return
    }
    let chat: ChatRequest
    try {
      chat = chatRequestOf(body)
    } catch (err) {
      fail(id, err)
      return
    }
    const controller = new AbortController()
    running.set(key, controller)
    void runSocketChat(socket, llm, chat, { controller, principal }, send, id)
      .catch((err: unknown) => { fail(id, err instanceof BkgError || !controller.signal.aborted ? err : new BkgError('cancelled', 499, 'cancelled by the client')) })
      .finally(() => running.delete(key))
  })
  socket.on('close', () => {
    for (const controller of running.values()) controller.abort(new BkgError('cancelled', 499, 'the client closed the socket'))
  })
}

/**
 * One chat's events to the socket. A cancelled chat is still read to its end for a few events:
 * the service, seeing its signal, ends with a `done` whose finish_reason is `cancelled` and
 * whose text is what was generated so far, which the client gets; a chat whose socket closed is
 * aborted and its iterator returned at once.
 */
async function runSocketChat (socket: WebSocket, llm: LlmApi, chat: ChatRequest, options: { controller: AbortController, principal: string | undefined }, send: (message: Record<string, unknown>) => void, id: string | undefined): Promise<void> {
  const { controller } = options
  const iterator: AsyncIterator<ChatEvent> = llm.chat(chat, { signal: controller.signal, principal: options.principal })[Symbol.asyncIterator]()
  const open = (): boolean => socket.readyState === socket.OPEN
  let afterCancel = 0
  let ended = false
  try {
    while (open()) {
      if (controller.signal.aborted && ++afterCancel > MAX_EVENTS_AFTER_CANCEL) break
      while (socket.bufferedAmount > MAX_WS_BUFFERED && open() && !controller.signal.aborted) await sleep(DRAIN_POLL_MS)
      if (!open()) break
      const next = await iterator.next()
      if (next.done === true) throw new BkgError('internal', 500, 'the chat ended without a result')
      // a cancelled chat's pieces are not sent; its `done` is
      if (controller.signal.aborted && next.value.type === 'text') continue
      const { type, data } = chatEventOut(next.value)
      // the result has an id of its own: nested, it cannot be taken for the client's
      send({ type, ...(id != null ? { id } : {}), ...(type === 'done' ? { result: data } : data) })
      if (next.value.type === 'done') {
        ended = true
        return
      }
    }
    throw new BkgError('cancelled', 499, 'cancelled by the client')
  } finally {
    // the socket went away or the service did not end: stop generation now
    if (!ended && !controller.signal.aborted) controller.abort(new BkgError('cancelled', 499, 'the client closed the socket'))
    try {
      await iterator.return?.()
    } catch {}
  }
}
