import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseNodeCertificate } from '../../ca/index.ts'
import type { DataDirPaths } from '../../node/identity/index.ts'
import { testModelGguf, type TestModelOptions } from '../../node/llm/gguf/test-model.ts'
import { openPackage, packModel, type PublisherIdentity } from '../../node/model-packages/index.ts'
import type { Envelope } from '../../protocols/model-package.ts'

/** Writes the project's test model (see node/llm/gguf/test-model.ts) into `dir`; returns its path. */
export async function writeTestModel (dir: string, options: TestModelOptions & { fileName?: string } = {}): Promise<string> {
  await mkdir(dir, { recursive: true })
  const path = join(dir, options.fileName ?? 'tiny-llama.gguf')
  await writeFile(path, testModelGguf(options))
  return path
}

export interface PackedTestModel {
  /** the signed `.bkg` */
  path: string
  /** `NAME@VERSION` */
  id: string
  name: string
  version: string
  /** the GGUF's path inside the package */
  file: string
  /** sha256 (hex) of the GGUF, as the manifest states it */
  sha256: string
  size: number
  envelope: Envelope
}

export interface PackTestModelInit {
  /** where the GGUF and the package are written */
  dir: string
  /** a provisioned node's data dir (its certificate needs the publisher role) or its PEMs */
  publisher: DataDirPaths | PublisherIdentity
  /** default `tiny-llama` */
  name?: string
  /** default `1.0.0` */
  version?: string
  model?: TestModelOptions
}

async function publisherOf (publisher: DataDirPaths | PublisherIdentity): Promise<PublisherIdentity> {
  if ('certPem' in publisher) return publisher
  return { certPem: await readFile(publisher.cert, 'utf8'), keyPem: await readFile(publisher.x509Key, 'utf8') }
}

/** Packs the test model as a signed `.bkg` (architecture `llama`), as `bkg model pack` would. */
export async function packTestModel (init: PackTestModelInit): Promise<PackedTestModel> {
  const name = init.name ?? 'tiny-llama'
  const version = init.version ?? '1.0.0'
  const source = await writeTestModel(join(init.dir, `${name}-${version}`), { ...init.model, fileName: `${name}.gguf` })
  const publisher = await publisherOf(init.publisher)
  const out = join(init.dir, `${name}-${version}.bkg`)
  const envelope = await packModel({
    source,
    name,
    version,
    architecture: 'llama',
    licence: 'MIT',
    publisher,
    publisherCert: parseNodeCertificate(publisher.certPem),
    out
  })
  const [file] = envelope.manifest.files
  return { path: out, id: `${name}@${version}`, name, version, file: file.path, sha256: file.sha256, size: file.size, envelope }
}

/**
 * Copies a package with one content byte flipped after signing: the signature still verifies, the
 * file's digest no longer does. `weights` flips a byte of the last tensor (the GGUF header stays
 * valid, so only the digest check can catch it); `header` flips one inside the GGUF magic.
 */
export async function tamperPackage (path: string, options: { out?: string, where?: 'weights' | 'header' } = {}): Promise<string> {
  const opened = await openPackage(path)
  const bytes = await readFile(path)
  const contentEnd = opened.dataOffset + opened.envelope.manifest.files.reduce((sum, f) => sum + f.size, 0)
  const at = (options.where ?? 'weights') === 'weights' ? contentEnd - 100 : opened.dataOffset + 1
  bytes[at] ^= 0x01
  const out = options.out ?? path.replace(/\.bkg$/, '') + '-tampered.bkg'
  await writeFile(out, bytes)
  return out
}

/** sha256 (hex) of a file, to compare with what a manifest or a response states */
export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
