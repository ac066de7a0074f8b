import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import type { NodeCertificate } from '../../ca/index.ts'
import { MAX_SYNC_MESSAGE_BYTES, MAX_SYNC_PAGE, SignedEvent, SyncRequest, SyncResponse, type SyncHead } from '../../protocols/events.ts'
import { EVENTS_SYNC_PROTOCOL } from '../../protocols/ids.ts'
import type { AdmittedPeers } from '../admission/index.ts'
import type { ProtocolStreams } from '../p2p/index.ts'
import type { EventStore } from './event-store.ts'
import { parseUntrustedJson } from '../../protocols/untrusted-json.ts'
import { DEFAULT_SYNC_MAX_STREAMS, DEFAULT_SYNC_PAGE_SIZE, DEFAULT_SYNC_REQUEST_TIMEOUT_MS } from './constants.ts'

/** the host's stream handling that `/bkg/events/sync` needs: serving the protocol and dialling it */
export type EventSyncStreams = ProtocolStreams

export interface EventSyncOptions {
  /** events asked for per range request (at most 1000, the wire format's limit) */
  pageSize?: number
  /** how long one request, or the answer to one, may take */
  requestTimeoutMs?: number
  /** concurrent sync streams per connection, each way */
  maxStreams?: number
}

export interface EventSyncDeps extends EventSyncOptions {
  streams: EventSyncStreams
  peers: Pick<AdmittedPeers, 'get' | 'isAdmitted'>
  store: EventStore
  log: Pick<Logger, 'debug'>
  /** namespaces this node's certificate lists */
  namespaces: ReadonlySet<string>
  /** whether this node keeps events at all (it answers with nothing otherwise, without opening a database) */
  databaseInUse: () => Promise<boolean>
  certificateOf: (peer: string) => NodeCertificate | undefined
  learnCertificate: (peer: string, pem: string) => void
  verify: (event: SignedEvent) => Promise<'ok' | 'unknown_origin' | 'bad'>
  ingest: (events: SignedEvent[]) => Promise<void>
}

/**
 * Catch-up over `/bkg/events/sync/1.0.0`: ask a peer for its chain heads in the namespaces both
 * certificates list, then for every chain where it is ahead, ask for the events after our head,
 * page by page. A peer only ever answers with namespaces the requester's certificate lists.
 */
export class EventSync {
  private readonly deps: EventSyncDeps
  private readonly pageSize: number
  private readonly requestTimeoutMs: number
  private readonly maxStreams: number
  private readonly running = new Map<string, Promise<void>>()
  private readonly again = new Set<string>()
  private stopped = false

  constructor (deps: EventSyncDeps) {
    this.deps = deps
    // a larger page would make every request invalid to peers (the wire format's limit)
    this.pageSize = Math.min(deps.pageSize ?? DEFAULT_SYNC_PAGE_SIZE, MAX_SYNC_PAGE)
    this.requestTimeoutMs = deps.requestTimeoutMs ?? DEFAULT_SYNC_REQUEST_TIMEOUT_MS
    this.maxStreams = deps.maxStreams ?? DEFAULT_SYNC_MAX_STREAMS
  }

  async start (): Promise<void> {
    await this.deps.streams.handle(EVENTS_SYNC_PROTOCOL, async (stream, connection) => { await this.serve(stream, connection) },
      { maxInboundStreams: this.maxStreams, maxOutboundStreams: this.maxStreams })
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.deps.streams.unhandle(EVENTS_SYNC_PROTOCOL)
    await Promise.all([...this.running.values()])
  }

  /** Catches up with `peer` soon; one run per peer at a time, and one more if asked meanwhile. */
  schedule (peer: PeerId): void {
    const id = peer.toString()
    if (this.stopped || !this.deps.peers.isAdmitted(id)) return
    if (this.running.has(id)) {
      this.again.add(id)
      return
    }
    const run = this.syncWith(peer)
      .then(() => {}, (err: unknown) => { this.deps.log.debug({ peer: id, err: (err as Error).message }, 'event catch-up failed') })
      .finally(() => {
        this.running.delete(id)
        if (this.again.delete(id)) this.schedule(peer)
      })
    this.running.set(id, run)
  }

  /** A peer's chain heads in the namespaces both certificates list. */
  async headsOf (peer: PeerId, timeoutMs = this.requestTimeoutMs): Promise<SyncHead[]> {
    const response = await this.request(peer, { op: 'heads' }, timeoutMs)
    if (!('heads' in response)) throw new Error('error' in response ? response.error : 'unexpected answer to heads')
    return response.heads
  }

  /** Runs catch-up with one peer now; resolves when this node's heads reach the peer's. */
  async syncWith (peer: PeerId): Promise<{ fetched: number }> {
    let fetched = 0
    for (const head of await this.headsOf(peer)) {
      if (!this.deps.namespaces.has(head.namespace)) continue
      fetched += await this.fetchChain(peer, head)
    }
    return { fetched }
  }

  private async fetchChain (peer: PeerId, target: SyncHead): Promise<number> {
    let fetched = 0
    while (!this.stopped) {
      const from = this.deps.store.head(target.origin, target.namespace)
      if (from >= target.seq) break
      const response = await this.request(peer, { op: 'range', origin: target.origin, namespace: target.namespace, afterSeq: from, limit: this.pageSize })
      if (!('events' in response)) throw new Error('error' in response ? response.error : 'unexpected answer to range')
      for (const [id, pem] of Object.entries(response.certs)) this.deps.learnCertificate(id, pem)
      const events: SignedEvent[] = []
      for (const raw of response.events) {
        const parsed = SignedEvent.safeParse(raw)
        // a peer passing on a forged or foreign event is not believed for the rest of this chain
        if (!parsed.success || parsed.data.origin !== target.origin || parsed.data.namespace !== target.namespace || parsed.data.seq <= from) {
          throw new Error('peer sent an event outside the requested range')
        }
        if (await this.deps.verify(parsed.data) !== 'ok') throw new Error(`peer sent an event that does not verify (${parsed.data.id})`)
        events.push(parsed.data)
      }
      if (events.length === 0) break
      await this.deps.ingest(events)
      fetched += events.length
      // no progress: the peer's chain has a gap where ours does, ask again later
      if (this.deps.store.head(target.origin, target.namespace) === from) break
    }
    return fetched
  }

  private async request (peer: PeerId, request: SyncRequest, timeoutMs = this.requestTimeoutMs): Promise<SyncResponse> {
    const signal = AbortSignal.timeout(timeoutMs)
    const stream = await this.deps.streams.dialProtocol(peer, EVENTS_SYNC_PROTOCOL, { signal })
    try {
      const channel = lpStream(stream, { maxDataLength: MAX_SYNC_MESSAGE_BYTES })
      await channel.write(new TextEncoder().encode(JSON.stringify(request)), { signal })
      const response = SyncResponse.parse(parseUntrustedJson((await channel.read({ signal })).subarray()))
      await stream.close({ signal }).catch(() => {}) // the answer is read: a failed close costs nothing but the stream
      return response
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const signal = AbortSignal.timeout(this.requestTimeoutMs)
    const channel = lpStream(stream, { maxDataLength: MAX_SYNC_MESSAGE_BYTES })
    try {
      const parsed = SyncRequest.safeParse(parseUntrustedJson((await channel.read({ signal })).subarray()))
      const response = parsed.success ? await this.answer(connection.remotePeer.toString(), parsed.data) : { error: 'malformed request' }
      await channel.write(new TextEncoder().encode(JSON.stringify(response)), { signal })
      await stream.close({ signal })
    } catch (err) {
      this.deps.log.debug({ err: (err as Error).message, peer: connection.remotePeer.toString() }, 'event sync request ended')
      stream.abort(err as Error)
    }
  }

  private async answer (requester: string, request: SyncRequest): Promise<SyncResponse> {
    const cert = this.deps.peers.get(requester)
    if (cert == null) return { error: 'not admitted' }
    /** what the requester may see and this node keeps */
    const shared = new Set(cert.namespaces.filter((ns) => this.deps.namespaces.has(ns)))
    if (!await this.deps.databaseInUse()) return request.op === 'heads' ? { heads: [] } : { events: [], certs: {} }
    await this.deps.store.load()
    if (request.op === 'heads') return { heads: this.deps.store.headsIn(shared) }
    if (!shared.has(request.namespace)) return { error: `namespace ${request.namespace} is not listed in both certificates` }
    const events = await this.deps.store.range(request.origin, request.namespace, request.afterSeq, request.limit)
    const origin = this.deps.certificateOf(request.origin)
    return { events, certs: origin != null && events.length > 0 ? { [request.origin]: origin.pem } : {} }
  }
}
