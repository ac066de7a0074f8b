/** the first wait before bootstrap peers are dialled again while the node has no connection */
export const BOOTSTRAP_RETRY_MIN_MS = 1000
/** the longest wait between bootstrap retries (the wait doubles after each failed round) */
export const BOOTSTRAP_RETRY_MAX_MS = 30_000
/** a bootstrap or cached-peer dial that has not connected by then counts as failed */
export const BOOTSTRAP_DIAL_TIMEOUT_MS = 10_000
/** at most this many connected peers are written to the peer cache at stop */
export const PEER_CACHE_MAX_PEERS = 64
/** at most this many addresses of each peer are written to, and dialled from, the peer cache */
export const PEER_CACHE_ADDRS_PER_PEER = 4
/** the peer-store tag bootstrap peers carry (with KEEP_ALIVE, so libp2p redials them when they drop) */
export const BOOTSTRAP_TAG = 'bkg-bootstrap'
/** the value of BOOTSTRAP_TAG: bootstrap peers rank high when the connection manager prunes */
export const BOOTSTRAP_TAG_VALUE = 50
