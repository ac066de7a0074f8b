import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import { BkgError } from '../../../lib/bkg-error.ts'
import { MAX_FAILED_PEERS } from '../../../protocols/infer.ts'
import type { CallOptions, ChatEvent, ChatRequest, EmbedRequest, EmbedResult, InferenceBackend, ModelId } from '../types.ts'
import type { ModelCandidate } from './announcements.ts'
import { mightSucceedElsewhere } from '../another-node.ts'
import { peerChat, peerEmbed, PeerInferError, type InferDial } from './infer-client.ts'
import type { PeerChoice } from './peer-choice.ts'

export interface RemoteBackendInit {
  /** peers tried for one request before it fails */
  maxPeers?: number
  /** text frames a peer may have in flight to this node per request */
  credit?: number
}

export interface RemoteBackendComponents {
  streams: InferDial
  /** the peers that announce a model (their announced file hash and slots) */
  candidates: (model: ModelId) => ModelCandidate[]
  choice: PeerChoice
  log: Pick<Logger, 'debug'>
  /** a peer failed before the first token and the request moves on to the next (metrics) */
  onFallback?: (reason: string, peerId: string) => void
}

export interface RemoteCallOptions extends CallOptions {
  /** peers not to ask (the lead's own reasons: tried already, known to be bad) */
  exclude?: string[]
}

export const DEFAULT_REMOTE_MAX_PEERS = 3

/** `remoteBackend(init)(components)`: runs a request on the best peer that announces its model. */
export function remoteBackend (init: RemoteBackendInit = {}): (components: RemoteBackendComponents) => RemoteBackend {
  return (components) => new RemoteBackend(init, components)
}

type Failure = { peerId: string, error: string }

/**
 * "Run it on the best peer": the peers announcing the model, ranked by PeerChoice; when the
 * chosen one fails before its first token (no connection, a reset, an error that is the peer's
 * and not the request's, a different model file than it announced), the next best is asked, up
 * to `maxPeers`, and the answer lists the ones that failed. After the first token a failure is
 * the caller's: the text already streamed cannot be taken back, so nothing is re-run silently.
 *
 * The `start` event is held back until the first token (or the end): a caller that turns it into
 * response headers names the node that really served.
 */
export class RemoteBackend implements InferenceBackend {
  private readonly maxPeers: number
  private readonly credit: number | undefined
  private readonly deps: RemoteBackendComponents

  constructor (init: RemoteBackendInit, components: RemoteBackendComponents) {
    this.maxPeers = Math.max(1, init.maxPeers ?? DEFAULT_REMOTE_MAX_PEERS)
    this.credit = init.credit
    this.deps = components
  }

  async * chat (request: ChatRequest & { model: ModelId }, options: RemoteCallOptions = {}): AsyncGenerator<ChatEvent> {
    const failed: Failure[] = []
    let lastError: unknown = null
    for (let attempt = 0; attempt < this.maxPeers; attempt++) {
      const peer = this.pick(request.model, options.exclude, failed)
      if (peer == null) break
      const release = this.deps.choice.begin(peer.peerId)
      const began = performance.now()
      const iterator = peerChat(this.deps.streams, peerIdFromString(peer.peerId), request, { signal: options.signal, credit: this.credit })
      let held: Extract<ChatEvent, { type: 'start' }> | null = null
      let committed = false
      try {
        for (;;) {
          let step: IteratorResult<ChatEvent>
          try {
            step = await iterator.next()
          } catch (err) {
            if (committed || options.signal?.aborted === true || !mightSucceedElsewhere(err)) throw err
            lastError = err
            break
          }
          if (step.done === true) {
            if (committed) return
            lastError = new PeerInferError(peer.peerId, 'llm_peer_failed', 502, `peer ${peer.peerId} ended the stream without an answer`, { streamFailed: true })
            break
          }
          const event = step.value
          if (!committed && event.type === 'start') {
            if (event.provenance.modelSha256 !== peer.sha256) {
              lastError = new PeerInferError(peer.peerId, 'llm_model_mismatch', 502, `peer ${peer.peerId} announced ${request.model} as ${peer.sha256} but runs ${event.provenance.modelSha256}`)
              break
            }
            held = event
            continue
          }
          if (!committed) {
            committed = true
            if (event.type === 'text') this.deps.choice.observeFirstToken(peer.peerId, performance.now() - began)
            if (held != null) yield held
          }
          if (event.type === 'done') {
            yield { type: 'done', result: { ...event.result, failedPeers: [...failed] } }
            return
          }
          yield event
        }
      } finally {
        release()
        // cancels the request on the peer unless it has ended
        await iterator.return()
      }
      this.failed(peer.peerId, lastError, failed)
    }
    throw this.exhausted(request.model, failed, lastError)
  }

  async embed (request: EmbedRequest & { model: ModelId }, options: RemoteCallOptions = {}): Promise<EmbedResult> {
    const failed: Failure[] = []
    let lastError: unknown = null
    for (let attempt = 0; attempt < this.maxPeers; attempt++) {
      const peer = this.pick(request.model, options.exclude, failed)
      if (peer == null) break
      const release = this.deps.choice.begin(peer.peerId)
      try {
        const result = await peerEmbed(this.deps.streams, peerIdFromString(peer.peerId), request, { signal: options.signal })
        if (result.modelSha256 === peer.sha256) return result
        lastError = new PeerInferError(peer.peerId, 'llm_model_mismatch', 502, `peer ${peer.peerId} announced ${request.model} as ${peer.sha256} but runs ${result.modelSha256}`)
      } catch (err) {
        if (options.signal?.aborted === true || !mightSucceedElsewhere(err)) throw err
        lastError = err
      } finally {
        release()
      }
      this.failed(peer.peerId, lastError, failed)
    }
    throw this.exhausted(request.model, failed, lastError)
  }

  /** Peers that announce the model, best first, without the excluded and the failed ones. */
  ranked (model: ModelId, exclude: string[] = []): Array<ModelCandidate & { score: number }> {
    const skip = new Set(exclude)
    return this.deps.choice.rank(this.deps.candidates(model).filter((candidate) => !skip.has(candidate.peerId)))
  }

  private pick (model: ModelId, exclude: string[] | undefined, failed: Failure[]): ModelCandidate | undefined {
    return this.ranked(model, [...(exclude ?? []), ...failed.map((f) => f.peerId)])[0]
  }

  private failed (peerId: string, err: unknown, failed: Failure[]): void {
    const reason = err instanceof BkgError ? err.code : 'llm_peer_failed'
    const message = err instanceof Error ? err.message : String(err)
    failed.push({ peerId, error: `${reason}: ${message}`.slice(0, 1024) })
    if (failed.length > MAX_FAILED_PEERS) failed.shift()
    this.deps.choice.observeFailure(peerId)
    this.deps.log.debug({ peer: peerId, reason }, 'an inference peer failed before the first token')
    this.deps.onFallback?.(reason, peerId)
  }

  /** No peer at all is `llm_no_peer`; when every peer tried failed, the last one's error says why (and Retry-After if all were busy). */
  private exhausted (model: ModelId, failed: Failure[], lastError: unknown): BkgError {
    if (failed.length === 0) return new BkgError('llm_no_peer', 503, `no peer announces ${model}`)
    const tried = failed.map((f) => `${f.peerId}: ${f.error}`).join('; ')
    const last = lastError instanceof BkgError ? lastError : null
    return new PeerInferError(failed.at(-1)!.peerId, last?.code ?? 'llm_peer_failed', last?.status ?? 502, `${model} failed on every peer tried (${tried})`.slice(0, 2048), {
      retryAfterSeconds: lastError instanceof PeerInferError ? lastError.retryAfterSeconds : undefined,
      cause: lastError
    })
  }
}
