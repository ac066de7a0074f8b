import { createReadStream } from 'node:fs'
import { lstat, readdir } from 'node:fs/promises'
import { basename, join, relative, sep } from 'node:path'
import type { NodeCertificate, ParsedCrl } from '../../ca/index.ts'
import { DEFAULT_CHUNK_SIZE, Manifest, MANIFEST_FORMAT, PackageError, type Envelope } from '../../protocols/model-package.ts'
import { digestContent } from './content-digest.ts'
import { writePackage } from './package-file.ts'
import { checkPublisherCertificate, signManifest, type PublisherIdentity } from './package-signing.ts'

export interface PackInit {
  /** a file, or a directory whose regular files (recursively) make up the model */
  source: string
  name: string
  version: string
  architecture: string
  licence: string
  chunkSize?: number
  publisher: PublisherIdentity
  publisherCert: NodeCertificate
  out: string
  now?: Date
  /**
   * the operator CA certificate and the CRL the packer has: the publisher certificate is then
   * checked as nodes check it at publish. Without a CA only its validity period is checked.
   */
  caPem?: string
  crl?: ParsedCrl | null
}

/**
 * Refuses, before any file is read, to sign with a certificate the nodes would refuse: a package
 * signed with it could never be published. Same error codes as verifyEnvelope.
 */
function checkPublisher (init: PackInit): void {
  const now = init.now ?? new Date()
  if (init.caPem !== undefined) {
    checkPublisherCertificate(init.publisher.certPem, { caPem: init.caPem, crl: init.crl ?? null, now })
    return
  }
  const cert = init.publisherCert
  if (now.getTime() > cert.notAfter.getTime()) {
    throw new PackageError('publisher_expired', `publisher certificate refused: the certificate expired at ${cert.notAfter.toISOString()}`)
  }
  if (now.getTime() < cert.notBefore.getTime()) {
    throw new PackageError('publisher_not_yet_valid', `publisher certificate refused: the certificate is not valid before ${cert.notBefore.toISOString()}`)
  }
}

/** `bkg model pack`: digests every file once, signs the manifest and writes the `.bkg` package. */
export async function packModel (init: PackInit): Promise<Envelope> {
  const chunkSize = init.chunkSize ?? DEFAULT_CHUNK_SIZE
  checkPublisher(init)
  const sources = await listSources(init.source)
  const files = []
  for (const { absolute, path } of sources) {
    const digest = await digestContent(createReadStream(absolute, { highWaterMark: 1024 * 1024 }), chunkSize)
    files.push({ path, ...digest })
  }
  const parsed = Manifest.safeParse({
    format: MANIFEST_FORMAT,
    name: init.name,
    version: init.version,
    architecture: init.architecture,
    licence: init.licence,
    createdAt: (init.now ?? new Date()).toISOString(),
    publisher: { peerId: init.publisherCert.peerId, name: init.publisherCert.name, serial: init.publisherCert.serial },
    chunkSize,
    files
  })
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new PackageError('manifest_invalid', `${issue?.path.join('.') || 'manifest'}: ${issue?.message ?? 'invalid'}`)
  }
  const envelope = signManifest(parsed.data, init.publisher, init.publisherCert)
  await writePackage(init.out, envelope, sources.map((s) => s.absolute))
  return envelope
}

async function listSources (source: string): Promise<Array<{ absolute: string, path: string }>> {
  let info
  try {
    info = await lstat(source)
  } catch {
    throw new PackageError('manifest_invalid', `cannot read ${source}: no such file or directory`)
  }
  if (info.isFile()) return [{ absolute: source, path: basename(source) }]
  if (!info.isDirectory()) throw new PackageError('manifest_invalid', `${source} is neither a file nor a directory`)
  const found: Array<{ absolute: string, path: string }> = []
  const walk = async (dir: string): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))
    for (const entry of entries) {
      const absolute = join(dir, entry.name)
      if (entry.isDirectory()) await walk(absolute)
      else if (entry.isFile()) found.push({ absolute, path: relative(source, absolute).split(sep).join('/') })
      else throw new PackageError('manifest_invalid', `${absolute}: only regular files and directories can be packed (no links or devices)`)
    }
  }
  await walk(source)
  if (found.length === 0) throw new PackageError('manifest_invalid', `${source} holds no files`)
  return found
}
