import type { PeerId, Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { z } from 'zod'
import { BkgError } from '../../../lib/bkg-error.ts'
import { INFER_PROTOCOL } from '../../../protocols/ids.ts'
import {
  DEFAULT_CREDIT, InferChatRequestFields, InferEmbedRequestFields, MAX_CREDIT, MAX_SERVER_FRAME_BYTES, decodeServerFrame, encodeFrame,
  type ClientFrame, type ServerFrame
} from '../../../protocols/infer.ts'
import type { ProtocolStreams } from '../../p2p/index.ts'
import type { ChatEvent, ChatRequest, EmbedRequest, EmbedResult, ModelId, Provenance } from '../types.ts'

/** What the client needs of the host: opening a stream to a peer. */
export type InferDial = Pick<ProtocolStreams, 'dialProtocol'>

export interface PeerCallOptions {
  signal?: AbortSignal
  /** text frames the peer may have in flight (default DEFAULT_CREDIT): what this side may have to buffer */
  credit?: number
}

/** An error the peer answered with (its code and status), or the peer's stream failing (`llm_peer_failed`). */
export class PeerInferError extends BkgError {
  readonly peerId: string
  /** with `llm_busy`: when the peer expects a free slot */
  readonly retryAfterSeconds: number | undefined
  /** the peer never produced an answer frame: the stream broke, the dial failed or the peer broke the protocol */
  readonly streamFailed: boolean

  constructor (peerId: string, code: string, status: number, message: string, extra: { retryAfterSeconds?: number, streamFailed?: boolean, cause?: unknown } = {}) {
    super(code, status, message, extra.cause != null ? { cause: extra.cause } : undefined)
    this.peerId = peerId
    this.retryAfterSeconds = extra.retryAfterSeconds
    this.streamFailed = extra.streamFailed ?? false
  }
}

function streamFailure (peer: string, err: unknown): PeerInferError {
  if (err instanceof PeerInferError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new PeerInferError(peer, 'llm_peer_failed', 502, `peer ${peer}: ${message}`, { streamFailed: true, cause: err })
}

function errorOf (peer: string, frame: Extract<ServerFrame, { type: 'error' }>): PeerInferError {
  return new PeerInferError(peer, frame.code, frame.status, frame.message, { retryAfterSeconds: frame.retryAfterSeconds })
}

/**
 * The answer as this node tells it: the connection authenticated who served, so `servedBy` is
 * that peer whatever the frame says, and the request went through a peer.
 */
function asViaPeer<T extends Provenance> (value: T, peer: string): T {
  return { ...value, servedBy: peer, viaPeer: true }
}

class InferCall {
  readonly peer: string
  readonly stream: Stream
  readonly channel: LengthPrefixedStream<Stream>
  private readonly signal: AbortSignal | undefined
  finished = false

  constructor (peer: string, stream: Stream, signal: AbortSignal | undefined) {
    this.peer = peer
    this.stream = stream
    this.signal = signal
    this.channel = lpStream(stream, { maxDataLength: MAX_SERVER_FRAME_BYTES, maxBufferSize: MAX_SERVER_FRAME_BYTES + 16 })
  }

  async send (frame: ClientFrame): Promise<void> {
    try {
      await this.channel.write(encodeFrame(frame), { signal: this.signal })
    } catch (err) {
      throw this.failure(err)
    }
  }

  async next (): Promise<ServerFrame> {
    let bytes: Uint8Array
    try {
      bytes = (await this.channel.read({ signal: this.signal })).subarray()
    } catch (err) {
      throw this.failure(err)
    }
    const frame = (() => {
      try {
        return decodeServerFrame(bytes)
      } catch (err) {
        throw new PeerInferError(this.peer, 'llm_peer_failed', 502, `peer ${this.peer} sent a malformed frame: ${(err as Error).message}`, { streamFailed: true })
      }
    })()
    if (frame.type === 'error') throw errorOf(this.peer, frame)
    return frame
  }

  /** the caller's abort is the caller's: it passes through as its reason, not as the peer's failure */
  private failure (err: unknown): unknown {
    if (this.signal?.aborted === true) return this.signal.reason
    return streamFailure(this.peer, err)
  }

  /** After the answer: our side ends, the peer's side is ended already. */
  async finish (): Promise<void> {
    this.finished = true
    await this.stream.close().catch(() => { this.stream.abort(new Error('close failed')) })
  }

  /** Before the answer: tell the peer to stop (it stops on the closed side too), then let go of the stream. */
  async cancel (): Promise<void> {
    if (this.finished) return
    this.finished = true
    try {
      await this.channel.write(encodeFrame({ type: 'cancel' }), { signal: AbortSignal.timeout(1000) })
      await this.stream.close({ signal: AbortSignal.timeout(1000) })
    } catch (err) {
      this.stream.abort(err as Error)
    }
  }
}

/**
 * The request as the wire carries it, checked here: a request any peer would refuse fails before
 * a peer is asked. Fields that are no part of ChatRequest / EmbedRequest (a route's own) are
 * dropped; a test checks that the schema knows every field of those types.
 */
function wireRequest<T> (schema: z.ZodType<T>, request: unknown): T {
  const parsed = schema.safeParse(request)
  if (parsed.success) return parsed.data
  const issue = parsed.error.issues[0]
  throw new BkgError('invalid_request', 400, `the request cannot go to a peer: ${issue.path.map(String).join('.')}: ${issue.message}`)
}

async function open (streams: InferDial, peer: PeerId, signal: AbortSignal | undefined): Promise<InferCall> {
  signal?.throwIfAborted()
  try {
    return new InferCall(peer.toString(), await streams.dialProtocol(peer, INFER_PROTOCOL, { signal }), signal)
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    throw streamFailure(peer.toString(), err)
  }
}

/**
 * Runs a chat on `peer` and streams its events. Pull-based like every chat stream: credit goes
 * back to the peer only as this generator's consumer asks for the next event, so a consumer that
 * stops reading stops the peer's generation after the credit in flight. Breaking out of the
 * iteration, or the signal, cancels the request on the peer. Errors are PeerInferErrors (the
 * peer's code and status, or `llm_peer_failed` when its stream broke).
 */
export async function * peerChat (
  streams: InferDial, peer: PeerId, request: ChatRequest & { model: ModelId }, options: PeerCallOptions = {}
): AsyncGenerator<ChatEvent, void, undefined> {
  const credit = Math.max(1, Math.min(options.credit ?? DEFAULT_CREDIT, MAX_CREDIT))
  // credit goes back in batches (half the window): a frame per token would double the frames
  const batch = Math.max(1, Math.floor(credit / 2))
  const wire = wireRequest(InferChatRequestFields, request)
  const call = await open(streams, peer, options.signal)
  try {
    await call.send({ type: 'chat', request: wire, credit })
    /** text frames granted and not yet received */
    let inFlight = credit
    /** text frames the consumer has taken since the last grant */
    let taken = 0
    for (;;) {
      const frame = await call.next()
      if (frame.type === 'start') {
        yield { type: 'start', provenance: asViaPeer(frame.provenance, call.peer) }
      } else if (frame.type === 'text') {
        if (--inFlight < 0) throw new PeerInferError(call.peer, 'llm_peer_failed', 502, `peer ${call.peer} sent more text than it had credit for`, { streamFailed: true })
        yield { type: 'text', text: frame.text, tokens: frame.tokens }
        // the consumer asked for more: now the peer may go on
        if (++taken >= batch) {
          await call.send({ type: 'credit', n: taken })
          inFlight += taken
          taken = 0
        }
      } else if (frame.type === 'done') {
        await call.finish()
        yield { type: 'done', result: asViaPeer(frame.result, call.peer) }
        return
      } else {
        throw new PeerInferError(call.peer, 'llm_peer_failed', 502, `peer ${call.peer} answered a chat with ${frame.type}`, { streamFailed: true })
      }
    }
  } finally {
    await call.cancel()
  }
}

/** Runs an embedding request on `peer`. */
export async function peerEmbed (
  streams: InferDial, peer: PeerId, request: EmbedRequest & { model: ModelId }, options: Pick<PeerCallOptions, 'signal'> = {}
): Promise<EmbedResult> {
  const wire = wireRequest(InferEmbedRequestFields, request)
  const call = await open(streams, peer, options.signal)
  try {
    await call.send({ type: 'embed', request: wire })
    const frame = await call.next()
    if (frame.type !== 'embedded') throw new PeerInferError(call.peer, 'llm_peer_failed', 502, `peer ${call.peer} answered an embedding with ${frame.type}`, { streamFailed: true })
    await call.finish()
    return asViaPeer(frame.result, call.peer)
  } finally {
    await call.cancel()
  }
}
