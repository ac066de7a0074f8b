import { z } from 'zod'
import { EventCursor, EventNamespace, EventPayload } from './events.ts'

/**
 * Realtime over WebSocket (`/realtime`): JSON text frames. A client joins channels:
 *   `events:<namespace>`        the namespace's stored events (filters and a resume cursor in `config`)
 *   `room:<namespace>:<name>`   broadcast messages and presence among the room's clients, mesh-wide
 * Every client message with a `ref` gets a `reply` with the same `ref`.
 */
export const CHANNEL_PATTERN = /^(events:[a-z0-9][a-z0-9._-]{0,62}|room:[a-z0-9][a-z0-9._-]{0,62}:[A-Za-z0-9._-]{1,64})$/
export const MAX_REALTIME_FRAME_BYTES = 128 * 1024

export type Json = z.infer<ReturnType<typeof z.json>>

const Ref = z.string().min(1).max(64)
const Channel = z.string().regex(CHANNEL_PATTERN, 'channel: events:<namespace> or room:<namespace>:<name>')

export const ClientMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('join'),
    ref: Ref,
    channel: Channel,
    config: z.object({
      /** events: only this event type */
      type: z.string().max(128).optional(),
      /** events: payload conditions `field=op.value` (all must hold) */
      filter: z.array(z.string().max(512)).max(16).optional(),
      /** events: replay what arrived after this cursor (event id or localId) first */
      after: EventCursor.optional(),
      /** room: receive own broadcasts too */
      self: z.boolean().optional()
    }).strict().default({})
  }).strict(),
  z.object({ type: z.literal('leave'), ref: Ref, channel: Channel }).strict(),
  z.object({ type: z.literal('broadcast'), ref: Ref.optional(), channel: Channel, event: z.string().min(1).max(128), payload: EventPayload }).strict(),
  /** room presence: track this client's state (an object), or untrack it (null) */
  z.object({ type: z.literal('presence'), ref: Ref.optional(), channel: Channel, key: z.string().min(1).max(128).optional(), state: z.record(z.string(), z.json()).nullable() }).strict(),
  z.object({ type: z.literal('heartbeat'), ref: Ref }).strict(),
  /** a fresh token for this connection (before the old one expires) */
  z.object({ type: z.literal('access_token'), ref: Ref, token: z.string().min(1).max(2048) }).strict()
])
export type ClientMessage = z.infer<typeof ClientMessage>

export function parseChannel (channel: string): { kind: 'events', namespace: string } | { kind: 'room', namespace: string, room: string } {
  const [kind, namespace, room] = channel.split(':')
  return kind === 'events' ? { kind, namespace } : { kind: 'room', namespace, room }
}

/** What nodes gossip on `bkg/broadcast/<namespace>` for rooms: messages, and each node's presence. */
export const RoomGossip = z.discriminatedUnion('kind', [
  z.object({ v: z.literal(1), kind: z.literal('broadcast'), namespace: EventNamespace, room: z.string().max(64), event: z.string().max(128), payload: EventPayload }).strict(),
  /** the sender's whole presence state for the room (sent on change and every PRESENCE_REFRESH_MS) */
  z.object({ v: z.literal(1), kind: z.literal('presence'), namespace: EventNamespace, room: z.string().max(64), state: z.record(z.string().max(128), z.array(z.json()).max(64)) }).strict()
])
export type RoomGossip = z.infer<typeof RoomGossip>

export const PRESENCE_REFRESH_MS = 15_000
/** a node's presence is dropped when it has not refreshed it for this long (it left or crashed) */
export const PRESENCE_TTL_MS = 45_000
