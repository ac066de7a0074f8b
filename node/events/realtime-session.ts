import { randomUUID } from 'node:crypto'
import { ClientMessage, MAX_REALTIME_FRAME_BYTES, parseChannel } from '../../protocols/realtime.ts'
import { describeJsonError, parseUntrustedJson, UntrustedJsonError } from '../../protocols/untrusted-json.ts'
import { msUntilExpiry, whenExpired, type Principal } from '../auth/index.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { parseFilter } from './event-filter.ts'
import type { EventService } from './event-service.ts'
import { EventSubscription } from './event-subscription.ts'
import type { RoomHub } from './room-hub.ts'

export interface RealtimeTransport {
  send: (message: object) => void
  /** bytes queued and not yet written to the socket */
  buffered: () => number
  /** resolves when the queue has drained (or the socket closed) */
  drained: () => Promise<void>
  close: (code: number, reason: string) => void
}

export interface RealtimeSessionDeps {
  events: EventService
  rooms: RoomHub
  /** checks a bearer token; null when forged, malformed or expired */
  verifyToken: (token: string) => Principal | null
}

const MAX_CHANNELS = 100
/** a frame's `ref`, when its text cannot be parsed (refs are 1-64 characters; see protocols/realtime.ts) */
const REF_IN_TEXT = /"ref"\s*:\s*"([A-Za-z0-9._:-]{1,64})"/
/** broadcast and presence messages a client may send per second (a burst of as many is allowed) */
export const MESSAGES_PER_SECOND = 500
/** a client further behind than this is told it lagged and disconnected, never buffered without bound */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024
export const LAGGED_CLOSE_CODE = 4008

interface Joined {
  leave: () => void
  /** events channels: the resume cursor */
  cursor?: () => number
}

/**
 * One realtime client connection: its channels (events with filters and resume; rooms with
 * broadcast and presence), its token (refreshable; channels end when it expires or stops
 * allowing them), and backpressure (past 4 MiB queued the client gets `lagged` with its cursors
 * and is disconnected).
 */
export class RealtimeSession {
  readonly id = randomUUID()
  private readonly deps: RealtimeSessionDeps
  private readonly transport: RealtimeTransport
  private principal: Principal
  private readonly channels = new Map<string, Joined>()
  private cancelExpiry: () => void = () => {}
  private closed = false
  private allowance = MESSAGES_PER_SECOND
  private lastRefill = Date.now()

  constructor (deps: RealtimeSessionDeps, transport: RealtimeTransport, principal: Principal) {
    this.deps = deps
    this.transport = transport
    this.principal = principal
    this.armExpiry()
  }

  /** Handles one text frame from the client. */
  async handle (text: string): Promise<void> {
    let raw: unknown
    try {
      raw = parseUntrustedJson(text, { maxBytes: MAX_REALTIME_FRAME_BYTES })
    } catch (err) {
      const reason = err instanceof UntrustedJsonError ? describeJsonError(err, 'frame') : 'frames are JSON objects'
      // a refused frame still answers its ref (found in the text: it could not be parsed), so a client waiting on it hears back
      const ref = REF_IN_TEXT.exec(text)?.[1]
      this.send({ type: ref != null ? 'reply' : 'error', ref, status: 'error', error: { code: 'invalid_message', message: reason } })
      return
    }
    const parsed = ClientMessage.safeParse(raw)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      const ref = typeof (raw as { ref?: unknown })?.ref === 'string' ? (raw as { ref: string }).ref : undefined
      this.send({ type: ref != null ? 'reply' : 'error', ref, status: 'error', error: { code: 'invalid_message', message: `${issue?.path.join('.') || 'message'}: ${issue?.message ?? 'invalid'}` } })
      return
    }
    const message = parsed.data
    try {
      const response = await this.dispatch(message)
      if (message.ref != null) this.send({ type: 'reply', ref: message.ref, status: 'ok', response: response ?? {} })
    } catch (err) {
      const code = err instanceof BkgError ? err.code : 'internal'
      const text = err instanceof BkgError ? err.message : 'internal error; see the node log'
      if (message.ref != null) this.send({ type: 'reply', ref: message.ref, status: 'error', error: { code, message: text } })
      else this.send({ type: 'error', error: { code, message: text } })
    }
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.cancelExpiry()
    for (const joined of this.channels.values()) joined.leave()
    this.channels.clear()
  }

  private async dispatch (message: ClientMessage): Promise<object | undefined> {
    // an expired token may only be replaced (or the connection kept alive and channels left): nothing new for it
    if (msUntilExpiry(this.principal) === 0 && message.type !== 'access_token' && message.type !== 'heartbeat' && message.type !== 'leave') {
      throw new BkgError('token_expired', 401, 'the token expired: send access_token with a fresh token first')
    }
    switch (message.type) {
      case 'heartbeat':
        return undefined
      case 'access_token': {
        const principal = this.deps.verifyToken(message.token)
        if (principal == null) throw new BkgError('unauthorized', 401, 'invalid or expired token')
        this.principal = principal
        this.armExpiry()
        // channels the new token no longer allows end now
        for (const channel of [...this.channels.keys()]) {
          if (!this.allows(parseChannel(channel).namespace)) this.end(channel, 'the new token does not allow this channel')
        }
        return { expiresAt: principal.expiresAt == null ? null : new Date(principal.expiresAt).toISOString() }
      }
      case 'join':
        return await this.join(message.channel, message.config)
      case 'leave':
        this.channels.get(message.channel)?.leave()
        this.channels.delete(message.channel)
        return undefined
      case 'broadcast': {
        this.spend()
        const room = this.room(message.channel)
        if (this.principal.role === 'reader') throw new BkgError('forbidden', 403, 'a reader token cannot broadcast')
        this.deps.rooms.broadcast(room.namespace, room.room, this.id, message.event, message.payload)
        return undefined
      }
      case 'presence': {
        this.spend()
        const room = this.room(message.channel)
        this.deps.rooms.track(room.namespace, room.room, this.id, message.key ?? this.id, message.state)
        return undefined
      }
    }
  }

  private async join (channel: string, config: { type?: string, filter?: string[], after?: string, self?: boolean }): Promise<object> {
    if (this.channels.has(channel)) throw new BkgError('already_joined', 409, `already joined ${channel}`)
    if (this.channels.size >= MAX_CHANNELS) throw new BkgError('too_many_channels', 429, `at most ${MAX_CHANNELS} channels per connection`)
    const target = parseChannel(channel)
    this.assertAllowed(target.namespace)
    if (target.kind === 'events') {
      const subscription = new EventSubscription({
        events: this.deps.events,
        principal: () => this.principal,
        selector: { namespace: target.namespace, type: config.type, filters: (config.filter ?? []).map(parseFilter) },
        after: config.after,
        deliver: (event) => {
          this.send({ type: 'event', channel, event })
          return this.transport.buffered() === 0
        },
        drained: this.transport.drained,
        onLagged: () => this.lagged()
      })
      await subscription.start()
      this.channels.set(channel, { leave: () => subscription.stop(), cursor: () => subscription.cursor })
      return {}
    }
    const { presence, leave } = this.deps.rooms.join(target.namespace, target.room, {
      session: this.id,
      self: config.self === true,
      onBroadcast: (message) => this.send({ type: 'broadcast', channel, event: message.event, payload: message.payload, from: message.from }),
      onPresence: (diff) => this.send({ type: 'presence_diff', channel, ...diff })
    })
    this.channels.set(channel, { leave })
    return { presence }
  }

  /** token bucket: every broadcast and presence message is gossiped to the whole namespace */
  private spend (): void {
    const now = Date.now()
    this.allowance = Math.min(MESSAGES_PER_SECOND, this.allowance + (now - this.lastRefill) * MESSAGES_PER_SECOND / 1000)
    this.lastRefill = now
    if (this.allowance < 1) throw new BkgError('rate_limited', 429, `at most ${MESSAGES_PER_SECOND} broadcast and presence messages per second per connection`)
    this.allowance--
  }

  private room (channel: string): { namespace: string, room: string } {
    const target = parseChannel(channel)
    if (target.kind !== 'room') throw new BkgError('invalid_channel', 400, 'broadcast and presence need a room:<namespace>:<name> channel')
    if (!this.channels.has(channel)) throw new BkgError('not_joined', 409, `join ${channel} first`)
    return target
  }

  private allows (namespace: string): boolean {
    return this.principal.kind === 'node-admin' || this.principal.namespace === namespace
  }

  private assertAllowed (namespace: string): void {
    if (!this.allows(namespace)) throw new BkgError('forbidden', 403, `this token is for namespace ${this.principal.namespace}, not ${namespace}`)
    if (!this.deps.events.certifiedNamespaces.has(namespace)) {
      throw new BkgError('namespace_not_certified', 403, `this node's certificate does not list namespace ${namespace}`)
    }
  }

  private end (channel: string, reason: string): void {
    this.channels.get(channel)?.leave()
    this.channels.delete(channel)
    this.send({ type: 'channel_closed', channel, reason })
  }

  private armExpiry (): void {
    this.cancelExpiry()
    this.cancelExpiry = whenExpired(this.principal, () => {
      for (const channel of [...this.channels.keys()]) this.end(channel, 'token expired')
      this.send({ type: 'token_expired', message: 'send access_token with a fresh token, then join again' })
    })
  }

  private lagged (): void {
    if (this.closed) return
    const cursors: Record<string, string> = {}
    for (const [channel, joined] of this.channels) if (joined.cursor != null) cursors[channel] = String(joined.cursor())
    this.transport.send({ type: 'lagged', cursors, message: 'client fell too far behind; reconnect and join with config.after set to the cursor' })
    this.close()
    this.transport.close(LAGGED_CLOSE_CODE, 'lagged')
  }

  private send (message: object): void {
    if (this.closed) return
    this.transport.send(message)
    if (this.transport.buffered() > MAX_BUFFERED_BYTES) this.lagged()
  }
}
