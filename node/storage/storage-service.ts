import { join } from 'node:path'
import type { Logger } from 'pino'
import type { NodeConfig } from '../config/schema.ts'
import type { Database } from '../db/database.ts'
import type { BlobBackend } from './backends/blob-backend.ts'
import { BlocksBackend } from './backends/blocks-backend.ts'
import { DiskBackend } from './backends/disk-backend.ts'
import type { S3Backend } from './backends/s3-backend.ts'
import { createS3Credentials, resolveAccessKey, type S3Credentials } from './credentials.ts'
import { ObjectStore } from './object-store.ts'
import type { TokenRole, Principal } from '../auth/index.ts'

export interface StorageServiceDeps {
  /** `<data>/storage` */
  dir: string
  config: NodeConfig['storage']
  db: Database
  /** HMAC key S3 secrets derive from (the node's token secret) */
  secret: string
  log: Logger
}

/**
 * Object storage: the object store over the configured blob backend. Disk and blockstore
 * backends are always available for reading, so objects written before a backend change stay
 * readable; the S3 backend exists when configured.
 */
export class StorageService {
  readonly objects: ObjectStore
  private readonly deps: StorageServiceDeps
  private readonly disk: DiskBackend
  private readonly blocks: BlocksBackend
  private readonly s3: S3Backend | null

  /** The AWS SDK is loaded only when an S3 backend is configured (it costs megabytes and start-up time). */
  static async create (deps: StorageServiceDeps): Promise<StorageService> {
    const s3 = deps.config.s3 != null ? new (await import('./backends/s3-backend.ts')).S3Backend(deps.config.s3, join(deps.dir, 'spool')) : null
    return new StorageService(deps, s3)
  }

  private constructor (deps: StorageServiceDeps, s3: S3Backend | null) {
    this.deps = deps
    this.disk = new DiskBackend(join(deps.dir, 'blobs'))
    this.blocks = new BlocksBackend(join(deps.dir, 'blocks'), async () => (await this.objects.locatorsIn('blocks')).map((locator) => String(locator.cid)), deps.log)
    this.s3 = s3
    const available: BlobBackend[] = [this.disk, this.blocks, ...(this.s3 != null ? [this.s3] : [])]
    const chosen = available.find((backend) => backend.name === deps.config.backend)!
    this.objects = new ObjectStore(deps.db, chosen, available, deps.log)
  }

  credentials (namespace: string, role: TokenRole): S3Credentials {
    return createS3Credentials(this.deps.secret, namespace, role)
  }

  /** the secret and principal of an S3 access key id this node issued */
  resolveAccessKey (accessKeyId: string): { secretAccessKey: string, principal: Principal } | null {
    return resolveAccessKey(this.deps.secret, accessKeyId)
  }

  /** Clears what a crash mid-upload left on disk; never opens the database. */
  async start (): Promise<void> {
    const removed = await this.disk.removeUnfinished() + (await this.s3?.removeUnfinished() ?? 0)
    if (removed > 0) this.deps.log.info({ removed }, 'removed unfinished uploads left by an earlier crash')
  }

  async stop (): Promise<void> {
    await this.blocks.close()
    this.s3?.close()
  }
}
