/*
 * The model service's defaults: options of `modelService(init)` (`init.x ?? DEFAULT_X`). Wire
 * limits (block, frame and manifest message sizes) stay in protocols/.
 */

/** signed manifests from gossip kept as the pullable catalog; the oldest goes first beyond it */
export const DEFAULT_MAX_CATALOG = 4096
/** finished pull jobs kept for GET /models/pull/:id (replication retries add one each time) */
export const DEFAULT_MAX_FINISHED_JOBS = 256
/** how long one provider record may take to reach the DHT */
export const DEFAULT_PROVIDE_TIMEOUT_MS = 10_000
/** a provider lookup answers with what it found by then */
export const DEFAULT_PROVIDER_LOOKUP_TIMEOUT_MS = 10_000
/** inbound (and outbound) streams per protocol that the block exchange serves at once */
export const DEFAULT_EXCHANGE_STREAMS = 32

/*
 * Pull tuning. Want-list size per request and requests in flight per provider bound what a pull
 * holds in its stream buffers (batch × streams × block size per provider). Many short requests
 * on parallel streams pipeline better than long ones (the provider reads and encrypts the next
 * block while the puller hashes and writes the last): 256 MiB from one seeder here took a median
 * 3.9 s with 16 × 2, 2.7 s with 4 × 4, 2.4 s with 2 × 4, 2.5 s with 1 × 4 (5 pulls each).
 */
export const DEFAULT_PULL_BATCH = 2
export const DEFAULT_PULL_STREAMS_PER_PROVIDER = 4
/** failed requests after which a provider is dropped from a pull */
export const DEFAULT_PULL_MAX_PROVIDER_FAILURES = 3
/** DHT providers looked up per file */
export const DEFAULT_PULL_MAX_PROVIDERS = 16
/** how long a pull's provider lookup for one file may take */
export const DEFAULT_PULL_PROVIDER_LOOKUP_MS = 5000
/** how long one want-list request may take */
export const DEFAULT_PULL_REQUEST_TIMEOUT_MS = 60_000
/** leaves being written to disk at once (each holds an aligned buffer) */
export const DEFAULT_DIRECT_WRITE_SLOTS = 4
/** verified leaves being written (and hashed) while more frames are read, per pull */
export const DEFAULT_LEAVES_IN_FLIGHT = 8
/** how long asking a connected peer for a model's signed envelope may take */
export const DEFAULT_PULL_MANIFEST_TIMEOUT_MS = 5000
