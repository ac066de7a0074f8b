import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'vitest'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import type { ImporterOptions } from 'ipfs-unixfs-importer'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { initCa, parseNodeCertificate, type NodeCertificate, type Role } from '../../ca/index.ts'
import { provisionNode } from '../../node/devnet/index.ts'
import { dataDirPaths, type DataDirPaths } from '../../node/identity/index.ts'
import type { PublisherIdentity } from '../../node/model-packages/index.ts'
import {
  ENVELOPE_FORMAT, MANIFEST_FORMAT, PackageError, SIGNATURE_ALGORITHM, type Envelope, type Manifest, type PackageErrorCode
} from '../../protocols/model-package.ts'

export interface Identity extends PublisherIdentity {
  paths: DataDirPaths
  cert: NodeCertificate
  caPem: string
}

/** A node enrolled and certified by the CA in `caDir`, exactly as an operator would provision it. */
export async function makeIdentity (caDir: string, dir: string, name: string, roles: Role[]): Promise<Identity> {
  const paths = dataDirPaths(join(dir, name))
  await provisionNode(caDir, paths, { name, roles, namespaces: ['default'] })
  const certPem = await readFile(paths.cert, 'utf8')
  return {
    paths,
    certPem,
    keyPem: await readFile(paths.x509Key, 'utf8'),
    cert: parseNodeCertificate(certPem),
    caPem: await readFile(paths.ca, 'utf8')
  }
}

export async function makeCa (dir: string, name: string): Promise<{ caDir: string, caPem: string }> {
  const caDir = join(dir, name)
  const { certPem } = await initCa(caDir, { name, days: 3650 })
  return { caDir, caPem: certPem }
}

/** Runs `fn` and asserts it throws (or rejects with) a PackageError with `code` and a message matching `message`. */
export async function expectPackageError (fn: () => unknown, code: PackageErrorCode, message?: RegExp): Promise<PackageError> {
  let thrown: unknown
  try {
    await fn()
  } catch (err) {
    thrown = err
  }
  expect(thrown, `expected PackageError ${code}, nothing was thrown`).toBeInstanceOf(PackageError)
  const err = thrown as PackageError
  expect(err.code, err.message).toBe(code)
  expect(err.message.length).toBeGreaterThan(0)
  if (message !== undefined) expect(err.message).toMatch(message)
  return err
}

/** Synchronous variant, for the pure format functions. */
export function expectPackageErrorSync (fn: () => unknown, code: PackageErrorCode | readonly PackageErrorCode[], message?: RegExp): PackageError {
  let thrown: unknown
  try {
    fn()
  } catch (err) {
    thrown = err
  }
  expect(thrown, `expected PackageError ${String(code)}, nothing was thrown`).toBeInstanceOf(PackageError)
  const err = thrown as PackageError
  const codes: readonly PackageErrorCode[] = typeof code === 'string' ? [code] : code
  expect(codes, err.message).toContain(err.code)
  if (message !== undefined) expect(err.message).toMatch(message)
  return err
}

export function hex (bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex')
}

/** A CIDv1 (raw codec, sha2-256) over a given 32-byte digest: a well-formed CID that need not name real content. */
export function rawCid (digest32: Uint8Array): string {
  return CID.create(1, 0x55, Digest.create(0x12, digest32)).toString()
}

/** A small valid manifest (not signed by anyone real). */
export function sampleManifest (overrides: Partial<Manifest> = {}): Manifest {
  const digest = new Uint8Array(32).fill(0xab)
  return {
    format: MANIFEST_FORMAT,
    name: 'tiny-model',
    version: '1.0.0',
    architecture: 'llama',
    licence: 'Apache-2.0',
    createdAt: '2024-05-01T12:00:00.000Z',
    publisher: { peerId: '12D3KooWExample', name: 'pub', serial: '0a1b2c' },
    chunkSize: 1024 * 1024,
    files: [
      { path: 'weights.bin', size: 10, sha256: hex(digest), cid: rawCid(digest) },
      { path: 'tokenizer/vocab.txt', size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', cid: rawCid(new Uint8Array(32).fill(1)) }
    ],
    ...overrides
  }
}

/** An envelope around `manifest` with a syntactically valid (but meaningless) signature and publisher. */
export function sampleEnvelope (manifest: unknown = sampleManifest()): Envelope {
  return {
    format: ENVELOPE_FORMAT,
    manifest: manifest as Manifest,
    signature: { alg: SIGNATURE_ALGORITHM, value: Buffer.alloc(256, 3).toString('base64') },
    publisher: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'
  }
}

export function jsonBytes (value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value))
}

/**
 * ipfs-unixfs-importer with the settings BKG's UnixFS profile names (protocols/model-package.ts):
 * the independent reference the own DAG builder is checked against.
 */
export function referenceImporterOptions (chunkSize: number): ImporterOptions {
  return {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    layout: balanced({ maxChildrenPerNode: 1024 }),
    chunker: fixedSize({ chunkSize })
  }
}
