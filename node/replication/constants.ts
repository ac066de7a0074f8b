/**
 * The replication folder's defaults. Those worth tuning are options of `replicationService(init)`
 * (`init.x ?? DEFAULT_X`); the rest are names in the data dir and on the wire.
 */

/** how often each node runs the placement rule again, besides on every log or peer change */
export const DEFAULT_RECONCILE_INTERVAL_MS = 5_000
/**
 * how long a node waits before it pulls again for a job whose last pull failed (e.g. a placed node
 * that holds a newer version refuses the older one as a rollback: it retries at this pace)
 */
export const DEFAULT_RETRY_AFTER_FAILURE_MS = 10_000
/** peers the block broker asks at once for a single block */
export const DEFAULT_BLOCK_FANOUT = 4
/** DHT providers the block broker asks for a block no connected peer holds */
export const DEFAULT_MAX_DHT_PROVIDERS = 8
/** how long the block broker looks for one block when Helia gives no signal of its own */
export const DEFAULT_BLOCK_TIMEOUT_MS = 30_000
/** replica log entries whose signature check is remembered (the cache is cleared when full) */
export const DEFAULT_MAX_VERIFIED_CACHE = 10_000
/** the replica log's OrbitDB directory, under the service's `dir` */
export const REPLICAS_DIR = 'replicas'
