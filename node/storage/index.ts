/**
 * Object storage: buckets and objects per namespace (rows in the node's database under RLS, bytes
 * in a blob backend: plain files, a UnixFS blockstore, or an S3 bucket), multipart uploads and
 * per-object checksums, plus the S3 access keys derived from the node's secret. The S3 protocol
 * itself (SigV4, aws-chunked, XML) is the API's business: node/api/s3/.
 *
 * checksums.ts stays here, not in api/s3/ or lib/: the object store computes and keeps the
 * checksums of every object and part whatever protocol wrote it; they are named the way S3 names
 * them (`x-amz-checksum-<algorithm>`) because S3 is the API that exposes them.
 *
 * This file is the folder's entry point for the node's other folders. S3 access keys are derived
 * from the token secret and live with the tokens, in `auth/`.
 *
 * @example
 * import { storageService, type StorageScope } from './storage/index.ts'
 *
 * // options (the config's storage section, tuning such as maxObjectBytes), then what it uses
 * const storage = storageService({ dir: paths.storage, ...config.storage })({ db, secret, log })
 * await storage.start()   // loads the AWS SDK if the s3 backend is configured, sweeps unfinished uploads
 * const scope: StorageScope = { tenant, namespace: 'default' }
 * await storage.objects.createBucket(scope, 'photos')
 * const meta = await storage.objects.putObject(scope, 'photos', 'a.jpg', body,
 *   { contentType: 'image/jpeg', metadata: {}, expected: { checksums: {} }, algorithms: ['crc32c'] })
 * for await (const bytes of storage.objects.read(await storage.objects.getObject(scope, 'photos', 'a.jpg'))) out.write(bytes)
 */
export { CHECKSUM_ALGORITHMS, checksumAlgorithmOf, checksumHeaderName, type ChecksumAlgorithm } from './checksums.ts'
export { StorageError, type ObjectMeta, type PutOptions, type StorageScope } from './object-store.ts'
export {
  storageService, StorageService,
  type StorageBackendName, type StorageComponents, type StorageInit
} from './storage-service.ts'
