import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'

/**
 * The checksums S3 clients send as `x-amz-checksum-<algorithm>` headers or aws-chunked trailers,
 * computed incrementally so a body never has to be held in memory. Values are base64 of the
 * big-endian digest, the way S3 writes them.
 */

export const CHECKSUM_ALGORITHMS = ['crc32', 'crc32c', 'sha1', 'sha256'] as const
export type ChecksumAlgorithm = typeof CHECKSUM_ALGORITHMS[number]

export interface Checksum {
  update (data: Uint8Array): Checksum
  /** base64, as in the `x-amz-checksum-*` header */
  digest (): string
}

export function createChecksum (algorithm: ChecksumAlgorithm): Checksum {
  switch (algorithm) {
    case 'crc32': return crcChecksum(crc32)
    case 'crc32c': return crcChecksum(crc32c)
    case 'sha1':
    case 'sha256': {
      const hash = createHash(algorithm)
      const checksum: Checksum = {
        update (data) {
          hash.update(data)
          return checksum
        },
        digest: () => hash.digest('base64')
      }
      return checksum
    }
  }
}

export function checksumHeaderName (algorithm: ChecksumAlgorithm): string {
  return `x-amz-checksum-${algorithm}`
}

/** `x-amz-checksum-crc32c` → `crc32c`; null for any other header or trailer name. */
export function checksumAlgorithmOf (headerName: string): ChecksumAlgorithm | null {
  const prefix = 'x-amz-checksum-'
  const name = headerName.toLowerCase()
  if (!name.startsWith(prefix)) return null
  const algorithm = name.slice(prefix.length)
  return (CHECKSUM_ALGORITHMS as readonly string[]).includes(algorithm) ? algorithm as ChecksumAlgorithm : null
}

function crcChecksum (update: (data: Uint8Array, previous: number) => number): Checksum {
  let value = 0
  const checksum: Checksum = {
    update (data) {
      value = update(data, value)
      return checksum
    },
    digest () {
      const out = Buffer.alloc(4)
      out.writeUInt32BE(value >>> 0)
      return out.toString('base64')
    }
  }
  return checksum
}

// Castagnoli polynomial, bit-reflected; zlib only knows the IEEE one. Eight tables let the loop
// consume eight bytes per step, several times faster than a byte at a time in JavaScript.
const CRC32C_TABLES = buildCrc32cTables(0x82f63b78)

function buildCrc32cTables (polynomial: number): Uint32Array[] {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256))
  for (let i = 0; i < 256; i++) {
    let crc = i
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ polynomial : crc >>> 1
    tables[0][i] = crc
  }
  for (let i = 0; i < 256; i++) {
    for (let t = 1; t < 8; t++) tables[t][i] = (tables[t - 1][i] >>> 8) ^ tables[0][tables[t - 1][i] & 0xff]
  }
  return tables
}

/** CRC-32C of `data`, continuing from `previous` (the value returned for the bytes before it). */
export function crc32c (data: Uint8Array, previous = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC32C_TABLES
  let crc = ~previous >>> 0
  let i = 0
  const fast = data.length - (data.length % 8)
  for (; i < fast; i += 8) {
    const lo = (crc ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24))) >>> 0
    crc = t7[lo & 0xff] ^ t6[(lo >>> 8) & 0xff] ^ t5[(lo >>> 16) & 0xff] ^ t4[lo >>> 24] ^
      t3[data[i + 4]] ^ t2[data[i + 5]] ^ t1[data[i + 6]] ^ t0[data[i + 7]]
  }
  for (; i < data.length; i++) crc = t0[(crc ^ data[i]) & 0xff] ^ (crc >>> 8)
  return ~crc >>> 0
}
