import { CID } from 'multiformats/cid'
import semver from 'semver'
import { z } from 'zod'
import { parseUntrustedJson } from './untrusted-json.ts'
import { BkgError } from '../lib/bkg-error.ts'

/**
 * The `.bkg` model package (see docs/model-format.md):
 *
 *   magic "BKGPKG1\n" (8 bytes) · envelope length (uint32 BE) · envelope (UTF-8 JSON) ·
 *   the bytes of every file of the manifest, in manifest order, back to back
 *
 * The envelope holds the manifest, the publisher's signature over its canonical JSON and the
 * publisher's certificate. Everything needed to accept or refuse a package is in the envelope,
 * so verification happens before any file byte is read or fetched.
 */
export const PACKAGE_MAGIC = new TextEncoder().encode('BKGPKG1\n')
export const MAX_ENVELOPE_BYTES = 1024 * 1024
export const MANIFEST_FORMAT = 'bkg-manifest/1'
export const ENVELOPE_FORMAT = 'bkg-package/1'
export const SIGNATURE_ALGORITHM = 'RSA-SHA256'
/** domain separation: a manifest signature can never be mistaken for any other signature */
export const SIGNATURE_CONTEXT = 'bkg-manifest-signature/1\n'

export const DEFAULT_CHUNK_SIZE = 1024 * 1024
export const MIN_CHUNK_SIZE = 64 * 1024
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024
export const MAX_FILES = 1024
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER

export type PackageErrorCode =
  | 'package_malformed' | 'manifest_invalid' | 'package_too_large'
  | 'signature_invalid' | 'publisher_unknown' | 'publisher_revoked' | 'publisher_expired'
  | 'publisher_not_yet_valid' | 'publisher_not_publisher' | 'publisher_mismatch'
  | 'version_rollback' | 'content_mismatch'

const PACKAGE_STATUS: Partial<Record<PackageErrorCode, number>> = { version_rollback: 409, content_mismatch: 422 }

/** Every refusal of a package is this error; parsing never throws anything else. */
export class PackageError extends BkgError {
  declare readonly code: PackageErrorCode
  constructor (code: PackageErrorCode, message: string) {
    super(code, PACKAGE_STATUS[code] ?? 400, message)
  }
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** an SPDX licence id or LicenseRef-…, or a simple AND/OR expression of them */
const SPDX = /^(?:[A-Za-z0-9][A-Za-z0-9.+-]{0,63})(?: (?:AND|OR|WITH) [A-Za-z0-9][A-Za-z0-9.+-]{0,63}){0,7}$/
const PATH_SEGMENT = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/

const FilePath = z.string().max(512).refine(
  (path) => path.split('/').every((segment) => PATH_SEGMENT.test(segment)),
  'a relative POSIX path of segments [A-Za-z0-9._-], no "." or ".." segments'
)

const CidString = z.string().max(128).refine((value) => {
  try {
    return CID.parse(value).version === 1
  } catch {
    return false
  }
}, 'a CIDv1 string')

export const PackageFile = z.object({
  path: FilePath,
  size: z.number().int().min(0).max(MAX_FILE_SIZE),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'lowercase hex sha256'),
  /** UnixFS root CID of the file's content, built in the profile of UNIXFS_MAX_CHILDREN */
  cid: CidString
}).strict()
export type PackageFile = z.infer<typeof PackageFile>

/** a model's name: what manifests, replica records and the API accept */
export const ModelName = z.string().regex(NAME, 'lowercase letters, digits, . _ -, at most 64')
/** a model's version: a semantic version */
export const ModelVersion = z.string().max(64).refine((v) => semver.valid(v) === v, 'a semantic version, e.g. 1.2.0')

export const Manifest = z.object({
  format: z.literal(MANIFEST_FORMAT),
  name: ModelName,
  version: ModelVersion,
  architecture: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/),
  licence: z.string().max(512).regex(SPDX, 'an SPDX licence identifier or expression'),
  createdAt: z.iso.datetime(),
  publisher: z.object({
    peerId: z.string().min(1).max(128),
    name: z.string().min(1).max(64),
    serial: z.string().regex(/^[0-9a-f]{1,64}$/)
  }).strict(),
  chunkSize: z.number().int().min(MIN_CHUNK_SIZE).max(MAX_CHUNK_SIZE),
  files: z.array(PackageFile).min(1).max(MAX_FILES).refine(
    (files) => new Set(files.map((f) => f.path)).size === files.length, 'file paths must be unique'
  ).refine(
    (files) => fileUnderAnotherFile(files.map((f) => f.path)) == null,
    { message: 'no file path may also be the directory of another (both "a" and "a/b")' }
  )
}).strict()

/** A path whose leading directory is itself listed as a file: such a package cannot be laid out on disk. */
function fileUnderAnotherFile (paths: string[]): string | null {
  const files = new Set(paths)
  for (const path of paths) {
    const segments = path.split('/')
    for (let i = 1; i < segments.length; i++) if (files.has(segments.slice(0, i).join('/'))) return path
  }
  return null
}
export type Manifest = z.infer<typeof Manifest>

export const Envelope = z.object({
  format: z.literal(ENVELOPE_FORMAT),
  manifest: z.unknown(),
  signature: z.object({ alg: z.literal(SIGNATURE_ALGORITHM), value: z.string().max(2048).regex(/^[A-Za-z0-9+/]+={0,2}$/) }).strict(),
  publisher: z.string().min(1).max(16 * 1024)
}).strict()
export type Envelope = Omit<z.infer<typeof Envelope>, 'manifest'> & { manifest: Manifest }

/**
 * The UnixFS profile of package content (a file's `cid`): CIDv1 with sha2-256, fixed-size raw
 * leaves of `chunkSize` bytes, a balanced layout with at most this many links per node, and a
 * file of one chunk is that raw leaf. It equals ipfs-unixfs-importer's `cidVersion: 1,
 * rawLeaves: true, reduceSingleLeafToSelf: true, layout: balanced({ maxChildrenPerNode: 1024 }),
 * chunker: fixedSize({ chunkSize })`, except that the importer encodes the root of a 2-4 GiB
 * file wrongly (node/dag/unixfs-builder.ts builds it right).
 */
export const UNIXFS_MAX_CHILDREN = 1024

/**
 * Canonical JSON (keys sorted by UTF-16 code units, no white space): the bytes a signature
 * covers. Manifests hold strings, safe integers, arrays and objects only (`numbers: 'integers'`);
 * event payloads may hold any finite number, written as ECMAScript writes it (shortest
 * round-trip form), which is RFC 8785's rule too.
 *
 * A wire format, not a general helper, so it lives in protocols/ and not lib/: it defines the
 * bytes that three formats sign (manifests here, events in events.ts, replica records in
 * replicas.ts), and any change to it would invalidate every signature already made. Its refusals
 * are PackageErrors (`manifest_invalid`), so it stays beside that class (a file of its own would
 * import this one and be imported by it).
 */
export function canonicalJson (value: unknown, numbers: 'integers' | 'finite' = 'integers'): string {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return JSON.stringify(value)
  if (typeof value === 'number') {
    if (numbers === 'integers' && !Number.isSafeInteger(value)) throw new PackageError('manifest_invalid', 'manifests hold integers only')
    if (!Number.isFinite(value)) throw new PackageError('manifest_invalid', 'canonical JSON holds finite numbers only')
    return JSON.stringify(value)
  }
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item, numbers)).join(',')}]`
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v, numbers)}`).join(',')}}`
  }
  throw new PackageError('manifest_invalid', `cannot encode ${typeof value} in a manifest`)
}

export function signedBytes (manifest: Manifest): Uint8Array {
  return new TextEncoder().encode(SIGNATURE_CONTEXT + canonicalJson(manifest))
}

export function encodeEnvelope (envelope: Envelope): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(envelope))
  if (json.byteLength > MAX_ENVELOPE_BYTES) throw new PackageError('package_too_large', `envelope is ${json.byteLength} bytes; the limit is ${MAX_ENVELOPE_BYTES}`)
  const header = new Uint8Array(PACKAGE_MAGIC.byteLength + 4)
  header.set(PACKAGE_MAGIC)
  new DataView(header.buffer).setUint32(PACKAGE_MAGIC.byteLength, json.byteLength)
  const out = new Uint8Array(header.byteLength + json.byteLength)
  out.set(header)
  out.set(json, header.byteLength)
  return out
}

/** Length of the magic + envelope-length prefix; the envelope starts right after it. */
export const HEADER_BYTES = PACKAGE_MAGIC.byteLength + 4

/** Reads the envelope length from the first HEADER_BYTES bytes of a package. */
export function decodeHeader (bytes: Uint8Array): number {
  if (bytes.byteLength < HEADER_BYTES) throw new PackageError('package_malformed', 'not a .bkg package: file is shorter than its header')
  for (let i = 0; i < PACKAGE_MAGIC.byteLength; i++) {
    if (bytes[i] !== PACKAGE_MAGIC[i]) throw new PackageError('package_malformed', 'not a .bkg package: wrong magic bytes')
  }
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(PACKAGE_MAGIC.byteLength)
  if (length === 0 || length > MAX_ENVELOPE_BYTES) throw new PackageError('package_malformed', `envelope length ${length} is out of range (1-${MAX_ENVELOPE_BYTES})`)
  return length
}

/** Parses and validates an envelope; throws only PackageError, whatever the bytes. */
export function decodeEnvelope (bytes: Uint8Array): Envelope {
  let json: unknown
  try {
    json = parseUntrustedJson(bytes)
  } catch (err) {
    throw new PackageError('package_malformed', `package envelope: ${(err as Error).message}`)
  }
  const envelope = Envelope.safeParse(json)
  if (!envelope.success) throw new PackageError('package_malformed', `package envelope: ${describe(envelope.error)}`)
  const manifest = Manifest.safeParse(envelope.data.manifest)
  if (!manifest.success) throw new PackageError('manifest_invalid', `manifest: ${describe(manifest.error)}`)
  return { ...envelope.data, manifest: manifest.data }
}

export function totalSize (manifest: Manifest): number {
  return manifest.files.reduce((sum, file) => sum + file.size, 0)
}

function describe (error: z.ZodError): string {
  const issue = error.issues[0]
  const where = issue?.path.length ? issue.path.join('.') : '(root)'
  return `${where}: ${issue?.message ?? 'invalid'}`
}
