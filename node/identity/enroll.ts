import { writeFile } from 'node:fs/promises'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createNodeCsr } from '../../ca/index.ts'
import { ensureDataDir, loadOrCreateLibp2pKey, loadOrCreateSecret, type DataDirPaths } from './data-dir.ts'
import { writeSecretFile } from '../../lib/fs.ts'

/**
 * `bkg init`: the node's libp2p identity (kept if it exists, so the PeerId never changes), a CSR
 * proving possession of that key, and the API secrets.
 */
export async function enrollNode (paths: DataDirPaths, name: string): Promise<{ peerId: string, csrPem: string, created: boolean }> {
  await ensureDataDir(paths)
  const { key, created } = await loadOrCreateLibp2pKey(paths)
  const { csrPem, x509KeyPem } = await createNodeCsr({ privateKey: key, name })
  await writeSecretFile(paths.x509Key, x509KeyPem)
  await writeFile(paths.csr, csrPem)
  await loadOrCreateSecret(paths.apiToken)
  await loadOrCreateSecret(paths.tokenSecret)
  return { peerId: peerIdFromPrivateKey(key).toString(), csrPem, created }
}
