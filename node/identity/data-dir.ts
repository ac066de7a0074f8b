import { randomBytes } from 'node:crypto'
import { mkdir, readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { writeSecretFile } from '../../lib/fs.ts'
import { BkgError } from '../../lib/bkg-error.ts'

/** Everything a node keeps on disk, by name. */
export interface DataDirPaths {
  dir: string
  /** libp2p Ed25519 private key (protobuf); the PeerId derives from it */
  libp2pKey: string
  /** RSA key of the X.509 certificate (node-forge cannot make Ed25519 certificates) */
  x509Key: string
  csr: string
  cert: string
  ca: string
  crl: string
  /** admin bearer token of the HTTP API */
  apiToken: string
  /** HMAC key that signs namespace-scoped API tokens */
  tokenSecret: string
  /** where `bkg start` writes the URL of its running API, for CLI commands that act on it */
  apiAddress: string
  /** held by the running node (`bkg start`): a second node on the same dir refuses to start */
  lock: string
  config: string
  bootstrapList: string
  /** peers last seen, so a restarted node can rejoin without its bootstrap list */
  peerCache: string
  /** held models: blockstore and registry */
  models: string
  /** the embedded Postgres (PGlite) data dir: events, object metadata */
  database: string
  /** object bytes (disk and blockstore backends), S3 upload spool */
  storage: string
  /** the sandbox registry, snapshot manifests and their content-addressed pages */
  sandboxes: string
}

export function defaultDataDir (): string {
  return process.env.BKG_DATA ?? join(homedir(), '.bkg')
}

export function dataDirPaths (dir: string): DataDirPaths {
  const root = resolve(dir)
  return {
    dir: root,
    libp2pKey: join(root, 'node.key'),
    x509Key: join(root, 'node-x509.key'),
    csr: join(root, 'node.csr'),
    cert: join(root, 'node.crt'),
    ca: join(root, 'ca.crt'),
    crl: join(root, 'crl.pem'),
    apiToken: join(root, 'api-token'),
    tokenSecret: join(root, 'token-secret'),
    apiAddress: join(root, 'api.json'),
    lock: join(root, 'node.lock'),
    config: join(root, 'config.json'),
    bootstrapList: join(root, 'bootstrap.txt'),
    peerCache: join(root, 'peers.json'),
    models: join(root, 'models'),
    database: join(root, 'db'),
    storage: join(root, 'storage'),
    sandboxes: join(root, 'sandboxes')
  }
}

export async function ensureDataDir (paths: DataDirPaths): Promise<void> {
  await mkdir(paths.dir, { recursive: true, mode: 0o700 })
}

export class IdentityMissingError extends BkgError {
  constructor (message: string) {
    super('identity_missing', 500, message)
  }
}

/** The libp2p key of an initialised data dir; a missing key is an error, never silently replaced. */
export async function loadLibp2pKey (paths: DataDirPaths): Promise<PrivateKey> {
  let bytes: Buffer
  try {
    bytes = await readFile(paths.libp2pKey)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new IdentityMissingError(`no node identity in ${paths.dir}: run \`bkg init --data ${paths.dir}\` first`)
    }
    throw err
  }
  return privateKeyFromProtobuf(bytes)
}

/** Returns the existing key, or makes and stores a new Ed25519 one. */
export async function loadOrCreateLibp2pKey (paths: DataDirPaths): Promise<{ key: PrivateKey, created: boolean }> {
  try {
    return { key: await loadLibp2pKey(paths), created: false }
  } catch (err) {
    if (!(err instanceof IdentityMissingError)) throw err
  }
  const key = await generateKeyPair('Ed25519')
  await writeSecretFile(paths.libp2pKey, privateKeyToProtobuf(key))
  return { key, created: true }
}

/** Reads a secret that `bkg init` created; never makes one up, so nothing signs with a key no node knows. */
export async function loadSecret (path: string, dir: string): Promise<string> {
  try {
    const value = (await readFile(path, 'utf8')).trim()
    if (value.length > 0) return value
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  throw new IdentityMissingError(`${dir} is not an initialised node data dir (no ${basename(path)}): run \`bkg init --data ${dir}\` first`)
}

/** Reads a secret, creating a random one (0600) on first use. */
export async function loadOrCreateSecret (path: string): Promise<string> {
  try {
    const value = (await readFile(path, 'utf8')).trim()
    if (value.length > 0) return value
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const value = randomBytes(32).toString('base64url')
  await writeSecretFile(path, value + '\n')
  return value
}
