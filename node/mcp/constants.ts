/** Defaults of the MCP server (node/mcp); each can be changed through the plugin's or the factory's options. */

/** a 2025-era session nobody used for this long is closed (its next request gets 404 and re-initializes) */
export const DEFAULT_SESSION_IDLE_MS = 10 * 60_000
/** open 2025-era sessions per token; one more is refused with 429 until one is closed or expires */
export const DEFAULT_MAX_SESSIONS_PER_PRINCIPAL = 32
/** open 2025-era sessions on the node */
export const DEFAULT_MAX_SESSIONS = 1024
/** while code runs, a progress notification at least this often (output chunks are sent as they come) */
export const PROGRESS_HEARTBEAT_MS = 1000
/** output text one progress notification carries at most; the rest follows in the next one */
export const MAX_PROGRESS_MESSAGE_CHARS = 8192
/** default and largest object `storage_get` returns inline */
export const DEFAULT_GET_MAX_BYTES = 1024 * 1024
export const MAX_GET_MAX_BYTES = 8 * 1024 * 1024
/** longest `models_pull` / `models_pull_status` wait for a pull to finish */
export const MAX_PULL_WAIT_MS = 10 * 60_000
/** how often a waiting `models_pull` reports the pull's progress */
export const PULL_PROGRESS_MS = 1000
/** the stateless revision served per request; 2025-era clients get sessions instead */
export const MODERN_PROTOCOL_VERSION = '2026-07-28'
