import { randomUUID } from 'node:crypto'
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import type { BlobBackend, ByteRange, Locator } from './blob-backend.ts'
import { DiskBackend } from './disk-backend.ts'

export interface S3BackendConfig {
  /** e.g. https://s3.eu-central-1.amazonaws.com, or another BKG node's http://host:port/s3 */
  endpoint: string
  region: string
  bucket: string
  accessKeyId: string
  secretAccessKey: string
  /** key prefix for this node's blobs inside the bucket */
  prefix: string
  forcePathStyle: boolean
}

/**
 * Object bytes in any external S3-compatible service, through the official AWS SDK. A body is
 * first spooled to a local file (a single PutObject needs its length up front), then sent, and
 * the spool removed: the object is acknowledged only once the remote service has it.
 */
export class S3Backend implements BlobBackend {
  readonly name = 's3'
  private readonly client: S3Client
  private readonly config: S3BackendConfig
  private readonly spool: DiskBackend

  constructor (config: S3BackendConfig, spoolDir: string) {
    this.config = config
    this.spool = new DiskBackend(spoolDir)
    this.client = new S3Client({
      endpoint: config.endpoint,
      region: config.region,
      forcePathStyle: config.forcePathStyle,
      credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey }
    })
  }

  async write (source: AsyncIterable<Uint8Array>): Promise<{ locator: Locator, size: number }> {
    const spooled = await this.spool.write(source)
    try {
      const key = `${this.config.prefix}${randomUUID()}`
      await this.client.send(new PutObjectCommand({
        Bucket: this.config.bucket,
        Key: key,
        Body: this.spool.read(spooled.locator),
        ContentLength: spooled.size
      }))
      return { locator: { key }, size: spooled.size }
    } finally {
      await this.spool.remove(spooled.locator)
    }
  }

  async * read (locator: Locator, range?: ByteRange): AsyncIterable<Uint8Array> {
    const response = await this.client.send(new GetObjectCommand({
      Bucket: this.config.bucket,
      Key: String(locator.key),
      Range: range == null ? undefined : `bytes=${range.start}-${range.end}`
    }))
    if (response.Body == null) return
    yield * response.Body as AsyncIterable<Uint8Array>
  }

  /** Deletes spooled uploads a crash left behind. */
  async removeUnfinished (): Promise<number> {
    return await this.spool.removeUnfinished()
  }

  async remove (locator: Locator): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: String(locator.key) }))
  }

  close (): void {
    this.client.destroy()
  }
}
