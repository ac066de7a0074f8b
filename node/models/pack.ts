import { createReadStream } from 'node:fs'
import { lstat, readdir } from 'node:fs/promises'
import { basename, join, relative, sep } from 'node:path'
import type { NodeCertificate } from '../../ca/index.ts'
import { DEFAULT_CHUNK_SIZE, Manifest, MANIFEST_FORMAT, PackageError, type Envelope } from '../../protocols/model-package.ts'
import { digestContent } from './content-digest.ts'
import { writePackage } from './package-file.ts'
import { signManifest, type PublisherIdentity } from './package-signing.ts'

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
}

/** `bkg model pack`: digests every file once, signs the manifest and writes the `.bkg` package. */
export async function packModel (init: PackInit): Promise<Envelope> {
  const chunkSize = init.chunkSize ?? DEFAULT_CHUNK_SIZE
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
