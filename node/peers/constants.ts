/** a dial that has not connected by then fails with dial_failed */
export const DIAL_TIMEOUT_MS = 15_000
/** a DHT lookup (findPeer) that has not answered by then is peer_not_found */
export const LOOKUP_TIMEOUT_MS = 15_000
/** a peer that answers no ping by then shows no latency */
export const PING_TIMEOUT_MS = 1000
