/**
 * Signed events per namespace (stored under row-level security, gossiped to the namespace's
 * nodes, caught up from peers), the subscriptions SSE and WebSocket clients read them through,
 * and rooms (broadcast and presence) for realtime clients.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { eventService, EventSubscription, parseFilter, roomHub } from './events/index.ts'
 *
 * const events = eventService({ resyncIntervalMs: 30_000 })({ peerId: host.peerId, pubsub: host.services.pubsub,
 *   streams: host, trust, peers, privateKey, db, log })
 * await events.start()
 * const [stored] = await events.publish(principal, [{ namespace: 'lab', type: 'reading', payload: { t: 21.5 } }])
 * const subscription = new EventSubscription({ events, principal: () => principal,
 *   selector: { namespace: 'lab', filters: [parseFilter('t=gt.20')] }, deliver, drained, onLagged })
 *
 * const rooms = roomHub()({ pubsub: host.services.pubsub, peers, namespaces: new Set(['lab']), log })
 * rooms.start()
 * const { presence, leave } = rooms.join('lab', 'lobby', { session, self: false, onBroadcast, onPresence })
 * rooms.track('lab', 'lobby', session, 'alice', { online: true })   // joins reach every node of 'lab'
 */
export { eventService, EventService, toWire, type EventServiceComponents, type EventServiceInit, type NewEvent } from './event-service.ts'
export type { StoredEvent } from './event-store.ts'
export { EventSubscription, type EventSubscriptionInit } from './event-subscription.ts'
export { FilterError, matches, parseFilter, type EventSelector, type PayloadFilter } from './event-filter.ts'
export { LAGGED_CLOSE_CODE, MAX_BUFFERED_BYTES, MESSAGES_PER_SECOND, RealtimeSession, type RealtimeSessionDeps, type RealtimeTransport } from './realtime-session.ts'
export { roomHub, RoomHub, type PresenceState, type RoomHubComponents, type RoomHubInit } from './room-hub.ts'
