import { BkgError } from '../../lib/bkg-error.ts'

/**
 * 4xx statuses that are the serving node's state, not the request's fault: refused admission
 * (403), a timeout (408), the model not there (404) or unloaded (409), its GGUF refused by that
 * node's loader (422), busy (429).
 */
const NODE_STATE_STATUSES = new Set([403, 404, 408, 409, 422, 429])

/**
 * Whether a request that failed on one node may succeed on another: the failure is that node's
 * (its state, a 5xx, a broken stream), not the request's (bad input would be refused anywhere).
 * The service asks it before sending a request that failed here to a peer, the remote backend
 * before trying the next peer.
 */
export function mightSucceedElsewhere (err: unknown): boolean {
  if (!(err instanceof BkgError)) return true
  return err.status >= 500 || NODE_STATE_STATUSES.has(err.status)
}
