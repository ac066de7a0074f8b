/** Where an object's bytes went: backend-specific, stored as JSON in the object's row. */
export type Locator = Record<string, string | number>

export interface ByteRange {
  /** first byte, inclusive */
  start: number
  /** last byte, inclusive */
  end: number
}

/**
 * A place for object bytes. `write` resolves only when the bytes are durable; the caller decides
 * (after checking digests) whether to keep them. Reads take an optional byte range.
 */
export interface BlobBackend {
  readonly name: string
  write: (source: AsyncIterable<Uint8Array>) => Promise<{ locator: Locator, size: number }>
  read: (locator: Locator, range?: ByteRange) => AsyncIterable<Uint8Array>
  remove: (locator: Locator) => Promise<void>
}
