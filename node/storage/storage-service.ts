import { join } from 'node:path'
import type { Logger } from 'pino'
import type { Database } from '../db/index.ts'
import type { BlobBackend } from './backends/blob-backend.ts'
import { BlocksBackend } from './backends/blocks-backend.ts'
import { DiskBackend } from './backends/disk-backend.ts'
import { LazyBackend } from './backends/lazy-backend.ts'
import type { S3Backend, S3BackendConfig } from './backends/s3-backend.ts'
import { BLOCKS_DIR, DEFAULT_BACKEND, DISK_DIR, SPOOL_DIR } from './constants.ts'
import { createS3Credentials, resolveAccessKey, type S3Credentials } from '../auth/index.ts'
import { ObjectStore } from './object-store.ts'
import type { TokenRole, Principal } from '../auth/index.ts'

export type StorageBackendName = 'disk' | 'blocks' | 's3'

export interface StorageInit {
  /** `<data>/storage` */
  dir: string
  /** where new object bytes go (config: storage.backend) */
  backend?: StorageBackendName
  /** the external S3-compatible service; needed for the s3 backend (config: storage.s3) */
  s3?: S3BackendConfig
  /** the largest object or part one request may write (default 5 GiB, S3's limit) */
  maxObjectBytes?: number
  /** the smallest a multipart upload's part may be, but the last (default 5 MiB, S3's minimum) */
  minPartBytes?: number
  /** the blocks backend's UnixFS chunk size (default 1 MiB; another size gives new objects other CIDs) */
  blockChunkBytes?: number
  /** blocks written this recently are never collected by the blocks backend (default 10 min) */
  blocksRecentMs?: number
  /** rows a listing reads from the database per query (default 1000) */
  listBatchRows?: number
}

export interface StorageComponents {
  /** bucket and object rows, every statement as the caller's tenant (RLS) or as the node */
  db: Pick<Database, 'asNode' | 'asTenant'>
  /** HMAC key S3 secrets derive from (the node's token secret) */
  secret: string
  log: Pick<Logger, 'info' | 'warn'>
}

/**
 * Object storage: the object store over the configured blob backend. Disk and blockstore
 * backends are always available for reading, so objects written before a backend change stay
 * readable; the S3 backend exists when configured.
 */
export class StorageService {
  readonly objects: ObjectStore
  private readonly components: StorageComponents
  private readonly disk: DiskBackend
  private readonly blocks: BlocksBackend
  private readonly s3: LazyBackend<S3Backend> | null

  constructor (components: StorageComponents, init: StorageInit) {
    this.components = components
    const backend = init.backend ?? DEFAULT_BACKEND
    this.disk = new DiskBackend(join(init.dir, DISK_DIR))
    this.blocks = new BlocksBackend(
      { liveRoots: async () => (await this.objects.locatorsIn('blocks')).map((locator) => String(locator.cid)), log: components.log },
      { dir: join(init.dir, BLOCKS_DIR), chunkBytes: init.blockChunkBytes, recentMs: init.blocksRecentMs })
    const s3 = init.s3
    if (backend === 's3' && s3 == null) throw new Error('the s3 storage backend needs the s3 settings (endpoint, bucket, keys)')
    // The AWS SDK costs megabytes and start-up time: it is loaded only when an S3 backend is
    // configured, and only in start(), so that building the service stays synchronous (the shape
    // every service has) while a node without S3 never loads it. Until then the object store
    // lists the backend by name; its first use would load it too.
    this.s3 = s3 == null ? null : new LazyBackend('s3', async () => new (await import('./backends/s3-backend.ts')).S3Backend(s3, join(init.dir, SPOOL_DIR)))
    const available: BlobBackend[] = [this.disk, this.blocks, ...(this.s3 != null ? [this.s3] : [])]
    const chosen = available.find((candidate) => candidate.name === backend)
    if (chosen == null) throw new Error(`no storage backend named ${backend}`)
    this.objects = new ObjectStore(
      { db: components.db, log: components.log },
      { backend: chosen, others: available, maxObjectBytes: init.maxObjectBytes, minPartBytes: init.minPartBytes, listBatchRows: init.listBatchRows })
  }

  credentials (namespace: string, role: TokenRole): S3Credentials {
    return createS3Credentials(this.components.secret, namespace, role)
  }

  /** the secret and principal of an S3 access key id this node issued */
  resolveAccessKey (accessKeyId: string): { secretAccessKey: string, principal: Principal } | null {
    return resolveAccessKey(this.components.secret, accessKeyId)
  }

  /** Loads the S3 backend when configured; clears what a crash mid-upload left on disk; never opens the database. */
  async start (): Promise<void> {
    const s3 = await this.s3?.load()
    const removed = await this.disk.removeUnfinished() + (await s3?.removeUnfinished() ?? 0)
    if (removed > 0) this.components.log.info({ removed }, 'removed unfinished uploads left by an earlier crash')
  }

  async stop (): Promise<void> {
    await this.blocks.close()
    const s3 = await this.s3?.built()
    s3?.close()
  }
}

/**
 * The storage service's factory, as every service has one: options first, then what it uses.
 *
 * @example
 * const storage = storageService({ dir: paths.storage, ...config.storage })({ db, secret, log })
 */
export function storageService (init: StorageInit): (components: StorageComponents) => StorageService {
  return (components) => new StorageService(components, init)
}
