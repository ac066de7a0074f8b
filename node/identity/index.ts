/**
 * A node's data dir and who the node is: the paths inside it, the libp2p key and the API secrets
 * (created 0600 on first use), the lock that keeps a second process off the same dir, and
 * enrolment (key plus certificate request for the operator to sign).
 *
 * @example
 * import { dataDirPaths, DataDirLock, enrollNode, loadLibp2pKey } from '../identity/index.ts'
 *
 * const paths = dataDirPaths('~/.bkg')
 * const { peerId, csrPem } = await enrollNode(paths, 'node-a')   // `bkg init`
 * const lock = await DataDirLock.acquire(paths)                   // DataDirLockedError if taken
 * const key = await loadLibp2pKey(paths)
 */
export { DataDirLock, DataDirLockedError } from './data-dir-lock.ts'
export {
  dataDirPaths, defaultDataDir, ensureDataDir, IdentityMissingError, loadLibp2pKey, loadOrCreateLibp2pKey, loadOrCreateSecret,
  loadSecret, type DataDirPaths
} from './data-dir.ts'
export { enrollNode } from './enroll.ts'
