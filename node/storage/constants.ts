/**
 * The storage folder's defaults. Those an operator may tune are options of `storageService(init)`
 * (`init.x ?? DEFAULT_X`); the rest are limits of the S3 protocol or the data dir's layout.
 */

/** where new object bytes go when the config names no backend */
export const DEFAULT_BACKEND = 'disk'
/** the largest object or part one request may write (S3's single-PUT limit); more goes in a multipart upload */
export const DEFAULT_MAX_OBJECT_BYTES = 5 * 1024 ** 3
/** every part of a multipart upload but the last must be at least this large (S3's minimum) */
export const DEFAULT_MIN_PART_BYTES = 5 * 1024 * 1024
/**
 * the blocks backend's UnixFS chunk size. A different size gives the same bytes different CIDs:
 * objects written before and after a change no longer share blocks.
 */
export const DEFAULT_BLOCK_CHUNK_BYTES = 1024 * 1024
/** blocks written this recently are never collected: their object's row may not be committed yet */
export const DEFAULT_BLOCKS_RECENT_MS = 10 * 60_000
/** rows a listing reads from the database per query while it rolls up common prefixes */
export const DEFAULT_LIST_BATCH_ROWS = 1000

/** bucket names as S3 has them: 3-63 of a-z 0-9 . -, starting and ending with a letter or digit */
export const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/
/** part numbers of a multipart upload are 1 to this (S3) */
export const MAX_PART_NUMBER = 10_000
/** object keys are at most this many bytes of UTF-8 (S3) */
export const MAX_KEY_BYTES = 1024

/** the data dir's layout under `<data>/storage`: plain files, the blockstore, the S3 backend's spool */
export const DISK_DIR = 'blobs'
export const BLOCKS_DIR = 'blocks'
export const SPOOL_DIR = 'spool'
