import { PRESENCE_REFRESH_MS, PRESENCE_TTL_MS } from '../../protocols/realtime.ts'

/** rooms tracked at once (remote presence included); beyond it, new rooms are not tracked */
export const MAX_ROOMS = 10_000
/** a node whose presence in a room was not refreshed for this long drops out of it (the wire protocol's TTL) */
export const ROOM_PRESENCE_TTL_MS = PRESENCE_TTL_MS
/** how often rooms re-send this node's presence and expire nodes that went quiet */
export const ROOM_REFRESH_INTERVAL_MS = Math.min(PRESENCE_REFRESH_MS, 5000)
