import { MAX_EVENT_GOSSIP_BYTES } from '../../protocols/events.ts'
import { PRESENCE_REFRESH_MS, PRESENCE_TTL_MS } from '../../protocols/realtime.ts'

/** rooms tracked at once (remote presence included); beyond it, new rooms are not tracked */
export const MAX_ROOMS = 10_000
/** a node whose presence in a room was not refreshed for this long drops out of it (the wire protocol's TTL) */
export const ROOM_PRESENCE_TTL_MS = PRESENCE_TTL_MS
/** how often rooms re-send this node's presence and expire nodes that went quiet */
export const ROOM_REFRESH_INTERVAL_MS = Math.min(PRESENCE_REFRESH_MS, 5000)

/*
 * The event service's defaults: options of `eventService(init)` (`init.x ?? DEFAULT_X`). Wire
 * limits (payload, gossip message and sync message sizes, the range request's maximum) stay in
 * protocols/events.ts.
 */

/** gossiped events waiting to be written; beyond this, catch-up fetches them later */
export const DEFAULT_MAX_QUEUED_EVENTS = 20_000
/** gossiped events written in one transaction */
export const DEFAULT_INGEST_BATCH = 1000
/** anti-entropy: heads are compared with every admitted peer this often while the database is open */
export const DEFAULT_RESYNC_INTERVAL_MS = 30_000
/** how long a node with an empty database waits for peers to tell it how far its own chains got */
export const DEFAULT_OWN_SEQ_TIMEOUT_MS = 3000
/** events asked for per catch-up range request (the wire format allows at most 1000) */
export const DEFAULT_SYNC_PAGE_SIZE = 500
/** how long one catch-up request (or the answer to one) may take */
export const DEFAULT_SYNC_REQUEST_TIMEOUT_MS = 15_000
/** concurrent `/bkg/events/sync` streams per connection, each way */
export const DEFAULT_SYNC_MAX_STREAMS = 16
/** new events are packed into gossip messages of up to this many bytes (never more than the wire's MAX_EVENT_GOSSIP_BYTES) */
export const DEFAULT_GOSSIP_MESSAGE_BYTES = MAX_EVENT_GOSSIP_BYTES
