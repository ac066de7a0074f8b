import type { Connection, Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { BkgError } from '../../../lib/bkg-error.ts'
import { INFER_PROTOCOL } from '../../../protocols/ids.ts'
import {
  MAX_CLIENT_FRAME_BYTES, MAX_TEXT_PIECE_CHARS, decodeClientFrame, encodeFrame,
  type ClientFrame, type InferChatRequest, type InferEmbedRequest, type ServerFrame
} from '../../../protocols/infer.ts'
import type { AdmittedPeers } from '../../admission/index.ts'
import type { ProtocolStreams } from '../../p2p/index.ts'
import type { ChatEvent, InferenceBackend } from '../types.ts'

export interface InferServerInit {
  /** concurrent infer streams per connection, each way; more wait in the local queue than run anyway */
  maxStreams?: number
  /** how long a peer may take to send its request after opening the stream */
  requestTimeoutMs?: number
  /** how long a chat waits for credit before it is cancelled: a stalled reader must not hold a slot for ever */
  stallTimeoutMs?: number
  /** after the answer, how long the peer has to close its side before the stream is reset */
  closeGraceMs?: number
}

export interface InferServerComponents {
  /** serving `/bkg/infer/1.0.0` */
  streams: Pick<ProtocolStreams, 'handle' | 'unhandle'>
  /** only admitted peers are served */
  peers: Pick<AdmittedPeers, 'isAdmitted'>
  /**
   * The backend that runs a request on this node's own models and never forwards it: a request a
   * peer sent here is never passed on to a third node, so requests cannot loop or hop.
   */
  local: InferenceBackend
  log: Pick<Logger, 'debug' | 'warn'>
}

export const DEFAULT_INFER_MAX_STREAMS = 32
export const DEFAULT_INFER_REQUEST_TIMEOUT_MS = 10_000
export const DEFAULT_INFER_STALL_TIMEOUT_MS = 120_000
export const DEFAULT_INFER_CLOSE_GRACE_MS = 5_000

/** `inferServer(init)(components)`: answers peers' requests with this node's local backend. */
export function inferServer (init: InferServerInit = {}): (components: InferServerComponents) => InferServer {
  return (components) => new InferServer(init, components)
}

/**
 * One request being served: the credit the client granted, the generation's abort (what the local
 * backend sees) and the request's cancellation (a cancel frame, the client's side ending or
 * resetting, a stall, the node stopping), which also aborts the generation and every read and
 * write of the stream. A generation that ends early for this side's own reasons (a failed send)
 * is aborted without cancelling, so an error frame can still go out.
 */
class Served {
  private readonly generation = new AbortController()
  private readonly cancellation = new AbortController()
  /** resolves when the generation is aborted, for races against a backend that is slow to notice */
  readonly aborted: Promise<'aborted'>
  credit = 0
  private wake: (() => void) | null = null

  constructor () {
    const { signal } = this.generation
    this.aborted = new Promise((resolve) => { signal.addEventListener('abort', () => { resolve('aborted') }, { once: true }) })
  }

  /** what the local backend runs under */
  get signal (): AbortSignal {
    return this.generation.signal
  }

  /** what the stream's reads and writes run under */
  get cancelSignal (): AbortSignal {
    return this.cancellation.signal
  }

  get cancelled (): boolean {
    return this.cancellation.signal.aborted
  }

  grant (n: number): void {
    this.credit += n
    this.poke()
  }

  cancel (reason: string): void {
    if (!this.cancelled) this.cancellation.abort(new BkgError('llm_cancelled', 499, reason))
    this.stopGeneration(reason)
  }

  stopGeneration (reason: string): void {
    if (!this.signal.aborted) this.generation.abort(new BkgError('llm_cancelled', 499, reason))
    this.poke()
  }

  /** Resolves true once there is credit, false once the generation is aborted (or stalls past `stallMs`). */
  async untilCredit (stallMs: number): Promise<boolean> {
    while (this.credit === 0 && !this.signal.aborted) {
      const timer = setTimeout(() => { this.cancel('no credit from the client') }, stallMs)
      await new Promise<void>((resolve) => { this.wake = resolve })
      clearTimeout(timer)
    }
    return !this.signal.aborted
  }

  private poke (): void {
    const wake = this.wake
    this.wake = null
    wake?.()
  }
}

function noop (): void {}

export class InferServer {
  private readonly deps: InferServerComponents
  private readonly maxStreams: number
  private readonly requestTimeoutMs: number
  private readonly stallTimeoutMs: number
  private readonly closeGraceMs: number
  private readonly running = new Map<Served, Promise<void>>()

  constructor (init: InferServerInit, components: InferServerComponents) {
    this.deps = components
    this.maxStreams = init.maxStreams ?? DEFAULT_INFER_MAX_STREAMS
    this.requestTimeoutMs = init.requestTimeoutMs ?? DEFAULT_INFER_REQUEST_TIMEOUT_MS
    this.stallTimeoutMs = init.stallTimeoutMs ?? DEFAULT_INFER_STALL_TIMEOUT_MS
    this.closeGraceMs = init.closeGraceMs ?? DEFAULT_INFER_CLOSE_GRACE_MS
  }

  async start (): Promise<void> {
    await this.deps.streams.handle(INFER_PROTOCOL, (stream: Stream, connection: Connection) => {
      const served = new Served()
      const done = this.serve(stream, connection.remotePeer.toString(), served).finally(() => { this.running.delete(served) })
      this.running.set(served, done)
      return done
    }, { maxInboundStreams: this.maxStreams, maxOutboundStreams: this.maxStreams })
  }

  /** Stops serving: running requests are cancelled (their generation stops) and their streams reset. */
  async stop (): Promise<void> {
    await this.deps.streams.unhandle(INFER_PROTOCOL)
    for (const served of this.running.keys()) served.cancel('the node is stopping')
    await Promise.all(this.running.values())
  }

  /** requests being served now */
  get active (): number {
    return this.running.size
  }

  private async serve (stream: Stream, peer: string, served: Served): Promise<void> {
    const channel = lpStream(stream, { maxDataLength: MAX_CLIENT_FRAME_BYTES, maxBufferSize: MAX_CLIENT_FRAME_BYTES + 16 })
    const send = async (frame: ServerFrame): Promise<void> => { await channel.write(encodeFrame(frame), { signal: served.cancelSignal }) }
    let control: Promise<void> = Promise.resolve()
    try {
      if (!this.deps.peers.isAdmitted(peer)) {
        await send({ type: 'error', code: 'not_admitted', status: 403, message: 'this node serves inference to admitted peers only' })
        return
      }
      const first = await this.firstFrame(channel, served)
      if (first.type !== 'chat' && first.type !== 'embed') {
        await send({ type: 'error', code: 'invalid_infer_frame', status: 400, message: 'a request starts with a chat or embed frame' })
        return
      }
      control = this.readControl(channel, served)
      if (first.type === 'chat') {
        served.grant(first.credit)
        await this.chat(first.request, peer, served, send)
      } else {
        await this.embed(first.request, peer, served, send)
      }
    } catch (err) {
      if (!served.cancelled) await send(this.errorFrame(err, peer)).catch(noop)
    } finally {
      await this.end(stream, served, control)
    }
  }

  private async firstFrame (channel: LengthPrefixedStream<Stream>, served: Served): Promise<ClientFrame> {
    const signal = AbortSignal.any([served.cancelSignal, AbortSignal.timeout(this.requestTimeoutMs)])
    return decodeClientFrame((await channel.read({ signal })).subarray())
  }

  /** Credit and cancel frames, until the client's side ends: its end, a reset or a frame out of place all cancel. */
  private async readControl (channel: LengthPrefixedStream<Stream>, served: Served): Promise<void> {
    try {
      for (;;) {
        const frame = decodeClientFrame((await channel.read({ signal: served.cancelSignal })).subarray())
        if (frame.type === 'credit') {
          served.grant(frame.n)
        } else {
          served.cancel(frame.type === 'cancel' ? 'cancelled by the client' : `unexpected ${frame.type} frame`)
          return
        }
      }
    } catch {
      served.cancel('the client closed the stream')
    }
  }

  private async chat (request: InferChatRequest, peer: string, served: Served, send: (frame: ServerFrame) => Promise<void>): Promise<void> {
    const iterator = this.deps.local.chat(request, { signal: served.signal, principal: `peer:${peer}` })[Symbol.asyncIterator]()
    let pending: Promise<IteratorResult<ChatEvent>> | null = null
    let answered = false
    try {
      for (;;) {
        // no credit: the next token is not even asked for, so the model's generation waits
        if (!await served.untilCredit(this.stallTimeoutMs)) return
        pending = iterator.next()
        const step = await Promise.race([pending, served.aborted])
        if (step === 'aborted') return
        pending = null
        if (step.done === true) throw new Error('the local backend ended a chat without a done event')
        const event = step.value
        if (event.type === 'text') {
          for (const [i, frame] of textFrames(event).entries()) {
            // a piece longer than a frame holds goes as several, each with its credit
            if (i > 0 && !await served.untilCredit(this.stallTimeoutMs)) return
            served.credit--
            await send(frame)
          }
        } else if (event.type === 'start') {
          await send({ type: 'start', provenance: event.provenance })
        } else {
          answered = true
          await send({ type: 'done', result: event.result })
          return
        }
      }
    } finally {
      // ended early (a failed send, the backend's error): the generation is aborted, then returned from
      if (!answered) served.stopGeneration('the request ended before its answer')
      // a pending step settles on its own once the backend sees the abort; return() queues behind it
      pending?.catch(noop)
      iterator.return?.().catch(noop)
    }
  }

  private async embed (request: InferEmbedRequest, peer: string, served: Served, send: (frame: ServerFrame) => Promise<void>): Promise<void> {
    const running = this.deps.local.embed(request, { signal: served.signal, principal: `peer:${peer}` })
    running.catch(noop)
    const result = await Promise.race([running, served.aborted])
    if (result === 'aborted') return
    await send({ type: 'embedded', result })
  }

  private errorFrame (err: unknown, peer: string): ServerFrame {
    if (err instanceof BkgError) {
      const retryAfter = (err as { retryAfterSeconds?: unknown }).retryAfterSeconds
      return {
        type: 'error',
        code: err.code.slice(0, 64),
        status: err.status >= 400 && err.status <= 599 ? err.status : 500,
        message: err.message.slice(0, 1024),
        ...(typeof retryAfter === 'number' && Number.isFinite(retryAfter) ? { retryAfterSeconds: Math.min(86_400, Math.max(0, Math.ceil(retryAfter))) } : {})
      }
    }
    this.deps.log.warn({ peer, err: (err as Error)?.message }, 'a peer\'s inference request failed')
    return { type: 'error', code: 'llm_failed', status: 500, message: 'the request failed on the serving node' }
  }

  /**
   * Our side ends; the client ends its side on reading the last frame (or has ended it already).
   * A client that does not is reset after the grace period, and so at once is a cancelled stream.
   */
  private async end (stream: Stream, served: Served, control: Promise<void>): Promise<void> {
    if (!served.cancelled) {
      await stream.close({ signal: AbortSignal.timeout(this.closeGraceMs) }).catch(noop)
      await Promise.race([closed(stream, this.closeGraceMs), new Promise((resolve) => { served.cancelSignal.addEventListener('abort', resolve, { once: true }) })])
    }
    if (stream.status === 'open' || stream.status === 'closing') stream.abort(new Error(served.cancelled ? 'cancelled' : 'the client did not close its side'))
    served.cancel('the request has ended')
    await control
  }
}

/** Resolves when both sides of the stream have ended, or after `ms`. */
async function closed (stream: Stream, ms: number): Promise<void> {
  if (stream.status !== 'open' && stream.status !== 'closing') return
  let timer: NodeJS.Timeout | undefined
  let listener: (() => void) | undefined
  await new Promise<void>((resolve) => {
    listener = resolve
    timer = setTimeout(resolve, ms)
    stream.addEventListener('close', listener, { once: true })
  })
  clearTimeout(timer)
  stream.removeEventListener('close', listener!)
}

function textFrames (event: Extract<ChatEvent, { type: 'text' }>): Array<Extract<ServerFrame, { type: 'text' }>> {
  if (event.text.length <= MAX_TEXT_PIECE_CHARS) return [{ type: 'text', text: event.text, tokens: event.tokens }]
  const frames: Array<Extract<ServerFrame, { type: 'text' }>> = []
  for (let at = 0; at < event.text.length; at += MAX_TEXT_PIECE_CHARS) {
    frames.push({ type: 'text', text: event.text.slice(at, at + MAX_TEXT_PIECE_CHARS), tokens: at === 0 ? event.tokens : 0 })
  }
  return frames
}
