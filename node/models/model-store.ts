import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import { CID } from 'multiformats/cid'
import semver from 'semver'
import { z } from 'zod'
import type { NodeCertificate } from '../../ca/index.ts'
import { Envelope, Manifest, PackageError } from '../../protocols/model-package.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { writeFileAtomic } from '../../lib/fs.ts'
import { localPath, PUBLISH_STAGING_PREFIX, StagedFiles } from './staged-files.ts'
import { readDag, RAW } from '../dag/index.ts'
import { assertDigestMatches, digestContent, openPackage, packageFileBytes, verifyEnvelope, type VerifyOptions } from '../model-packages/index.ts'
import { LeafIndex } from './leaf-index.ts'

const RegistryEntry = z.object({
  envelope: Envelope.extend({ manifest: Manifest }),
  /** every block CID this model's files need */
  blocks: z.array(z.string()),
  addedAt: z.string()
})
const Registry = z.object({ version: z.literal(1), entries: z.array(RegistryEntry) })
type RegistryEntry = z.infer<typeof RegistryEntry>
export type EnvelopeOf = RegistryEntry['envelope']

export interface StoredModel {
  name: string
  version: string
  manifest: Manifest
  addedAt: string
  /** directory holding the model's checked files */
  location: string
}

/** refusals of the store: model_not_found, file_not_found, model_exists */
export class ModelStoreError extends BkgError {}

export interface ModelStoreDeps {
  /** trust anchor and CRL of the node, read at each verification */
  trust: () => Omit<VerifyOptions, 'latestVersion' | 'now'>
}

/**
 * The models this node holds: verified `.bkg` content in a content-addressed blockstore on disk
 * (Helia's blockstore-fs) plus a registry of signed manifests. A model appears only after every
 * block of every file was written and the files matched their signed size, sha256 and CID.
 */
export class ModelStore {
  private readonly dir: string
  private readonly deps: ModelStoreDeps
  private blocks?: FsBlockstore
  /** the store's layout, kept here so single-read block access can find the files */
  private readonly sharding = new NextToLast()
  private entries: RegistryEntry[] = []
  private readonly leaves = new LeafIndex()
  private queue: Promise<unknown> = Promise.resolve()

  constructor (dir: string, deps: ModelStoreDeps) {
    this.dir = dir
    this.deps = deps
  }

  private get registryPath (): string {
    return join(this.dir, 'registry.json')
  }

  async start (): Promise<void> {
    await mkdir(this.dir, { recursive: true })
    this.blocks = new FsBlockstore(join(this.dir, 'blocks'), { shardingStrategy: this.sharding })
    await this.blocks.open()
    try {
      this.entries = Registry.parse(JSON.parse(await readFile(this.registryPath, 'utf8'))).entries
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`model registry ${this.registryPath} is unreadable: ${(err as Error).message}`)
      this.entries = []
    }
    for (const entry of this.entries) await this.indexLeaves(entry)
    await this.removeAbandonedStaging()
  }

  /** A publish's staging directory is garbage after a crash; a pull's is kept for resuming. */
  private async removeAbandonedStaging (): Promise<void> {
    // no files directory yet (no model ever held): nothing to clean
    const names = await readdir(this.filesDir).catch(() => [] as string[])
    await Promise.all(names.filter((name) => name.startsWith(PUBLISH_STAGING_PREFIX)).map(async (name) => {
      await rm(join(this.filesDir, name), { recursive: true, force: true })
    }))
  }

  /** Makes the leaves of a held model's files readable by CID (see LeafIndex). */
  private async indexLeaves (entry: RegistryEntry): Promise<void> {
    const { name, version, files } = entry.envelope.manifest
    const location = this.locationOf(name, version)
    for (const file of files) {
      try {
        await this.leaves.addFile(CID.parse(file.cid), localPath(location, file.path), file.size, this.readNodeBlock)
      } catch {
        // an inner node is missing or damaged: `verify` reports it; the file's leaves are not served
      }
    }
  }

  async stop (): Promise<void> {
    await this.queue
    await this.leaves.close()
    await this.blocks?.close()
  }

  list (): StoredModel[] {
    return this.entries.map((entry) => this.toStored(entry))
  }

  get (name: string, version: string): StoredModel | undefined {
    const entry = this.find(name, version)
    return entry == null ? undefined : this.toStored(entry)
  }

  envelopeOf (name: string, version: string): z.infer<typeof RegistryEntry>['envelope'] | undefined {
    return this.find(name, version)?.envelope
  }

  /** the blockstore on disk (Helia's, shared with the replica log's entries) */
  get blockstore (): FsBlockstore {
    return this.requireBlocks()
  }

  /** A block for a peer or a pull (as stored, not re-checked: receivers check), or null when not held. */
  async getBlock (cid: CID): Promise<Uint8Array | null> {
    try {
      return await this.readBlock(cid)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }

  /** readBlock for a held model's own reads: a missing block is damage to the model, not absence. */
  private readonly readHeldBlock = async (cid: CID): Promise<Uint8Array> => {
    try {
      return await this.readBlock(cid)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new PackageError('content_mismatch', `block ${cid.toString()} is missing from the store`)
      throw err
    }
  }

  /** Raw leaves from the held files (LeafIndex), everything else from the blockstore. ENOENT when absent. */
  private readonly readBlock = async (cid: CID): Promise<Uint8Array> => {
    if (cid.code === RAW) {
      const leaf = await this.leaves.read(cid)
      if (leaf != null) return leaf
    }
    return await this.readNodeBlock(cid)
  }

  /**
   * One read per block: blockstore-fs's own get() streams a block in 64 KiB pieces, which cost a
   * seeder a third of its CPU in garbage collection (measured with --cpu-prof during a pull).
   */
  private readonly readNodeBlock = async (cid: CID): Promise<Uint8Array> => {
    const { dir, file } = this.sharding.encode(cid)
    return await readFile(join(this.requireBlocks().path, dir, file))
  }

  /** Stores a DAG's inner node (raw leaves live in the model's files); it may come as received chunks. */
  async putBlock (cid: CID, block: Uint8Array | Uint8Array[]): Promise<void> {
    if (cid.code === RAW) throw new Error('raw leaves are kept in the model files, not as blocks')
    await this.requireBlocks().put(cid, block)
  }

  latestVersion (name: string): string | null {
    const versions = this.entries.filter((e) => e.envelope.manifest.name === name).map((e) => e.envelope.manifest.version)
    return versions.length === 0 ? null : semver.rsort(versions)[0]
  }

  /** Verifies a `.bkg` file and adds its content; returns the model and whether it was new. */
  async addPackage (path: string): Promise<{ model: StoredModel, publisher: NodeCertificate, added: boolean }> {
    return await this.serial(async () => {
      const opened = await openPackage(path)
      const existing = this.find(opened.envelope.manifest.name, opened.envelope.manifest.version)
      const { manifest, publisher } = verifyEnvelope(opened.envelope, {
        ...this.deps.trust(),
        // re-adding the version already held is not a rollback
        latestVersion: existing != null ? null : this.latestVersion(opened.envelope.manifest.name)
      })
      if (existing != null) {
        if (JSON.stringify(existing.envelope.manifest) !== JSON.stringify(manifest)) {
          throw new ModelStoreError('model_exists', 409, `${manifest.name}@${manifest.version} is already held with a different manifest`)
        }
        return { model: this.toStored(existing), publisher, added: false }
      }
      const written = new Set<string>()
      const staged = new StagedFiles(this.filesDir)
      try {
        let offset = opened.dataOffset
        for (const file of manifest.files) {
          await this.importFile(path, offset, file, manifest.chunkSize, written, staged)
          offset += file.size
        }
        await staged.commit(this.locationOf(manifest.name, manifest.version))
      } catch (err) {
        await staged.discard()
        await this.deleteUnreferenced(written)
        throw err
      }
      const entry = await this.register(opened.envelope, written)
      return { model: this.toStored(entry), publisher, added: true }
    })
  }

  /**
   * The staging directory of a pull of name@version, inside the store (same file system as the
   * files' final place). It has a fixed name and outlives a failed or killed pull: the next pull
   * of the same model resumes from the leaves already written there (each re-checked).
   */
  stageFor (name: string, version: string): StagedFiles {
    return new StagedFiles(this.filesDir, `.pull-${name}@${version}`)
  }

  /**
   * Registers a model whose blocks the puller fetched into this store and whose files it
   * assembled in `staged` and checked against the signed sizes and sha256: the envelope is verified
   * again, the files are moved into place, then the model appears.
   */
  async adoptFetched (envelope: EnvelopeOf, blocks: Set<string>, staged: StagedFiles): Promise<StoredModel> {
    return await this.serial(async () => {
      const existing = this.find(envelope.manifest.name, envelope.manifest.version)
      if (existing != null) {
        await staged.discard()
        return this.toStored(existing)
      }
      verifyEnvelope(envelope, { ...this.deps.trust(), latestVersion: this.latestVersion(envelope.manifest.name) })
      await staged.commit(this.locationOf(envelope.manifest.name, envelope.manifest.version))
      return this.toStored(await this.register(envelope, blocks))
    })
  }

  /** Adds a checked model whose files are in place: its leaves become readable, then it appears. */
  private async register (envelope: EnvelopeOf, blocks: Set<string>): Promise<RegistryEntry> {
    const entry: RegistryEntry = { envelope, blocks: [...blocks], addedAt: new Date().toISOString() }
    await this.indexLeaves(entry)
    this.entries = [...this.entries, entry]
    await this.saveRegistry()
    return entry
  }

  async remove (name: string, version: string): Promise<StoredModel> {
    return await this.serial(async () => {
      const entry = this.require(name, version)
      this.entries = this.entries.filter((e) => e !== entry)
      await this.saveRegistry()
      this.leaves.removeUnder(this.locationOf(name, version))
      await rm(this.locationOf(name, version), { recursive: true, force: true })
      await this.deleteUnreferenced(new Set(entry.blocks))
      return this.toStored(entry)
    })
  }

  /** Streams one file of a held model, each block checked against its CID on the way out. */
  async openFile (name: string, version: string, path: string): Promise<{ size: number, sha256: string, content: AsyncIterable<Uint8Array> }> {
    const entry = this.require(name, version)
    return this.openFileOf(entry, path)
  }

  private openFileOf (entry: RegistryEntry, path: string): { size: number, sha256: string, content: AsyncIterable<Uint8Array> } {
    const { name, version } = entry.envelope.manifest
    const file = entry.envelope.manifest.files.find((f) => f.path === path)
    if (file == null) throw new ModelStoreError('file_not_found', 404, `${name}@${version} has no file ${path}`)
    return { size: file.size, sha256: file.sha256, content: readDag(CID.parse(file.cid), this.readHeldBlock) }
  }

  /** Re-reads every file of a held model and checks size and sha256 (blocks are CID-checked as they are read). */
  async verify (name: string, version: string): Promise<StoredModel> {
    const entry = this.require(name, version)
    await this.checkFiles(entry)
    return this.toStored(entry)
  }

  /**
   * Checks a held model as a runtime about to use it should: its signature against today's trust
   * anchor and CRL (a publisher revoked since the model arrived is refused), then every file.
   */
  async verifyForUse (name: string, version: string): Promise<StoredModel> {
    const entry = this.require(name, version)
    // the rollback check is about accepting a package, not about using one already held
    verifyEnvelope(entry.envelope, { ...this.deps.trust(), latestVersion: null })
    await this.checkFiles(entry)
    return this.toStored(entry)
  }

  /** Where the checked files of a held model lie as plain files (for runtimes that need a path). */
  locationOf (name: string, version: string): string {
    return join(this.filesDir, name, version)
  }

  private get filesDir (): string {
    return join(this.dir, 'files')
  }

  /** Reads every file of an entry from the store (each block CID-checked) against its size and sha256. */
  private async checkFiles (entry: RegistryEntry): Promise<void> {
    const { name, version } = entry.envelope.manifest
    for (const file of entry.envelope.manifest.files) {
      const { content } = this.openFileOf(entry, file.path)
      const hash = createHash('sha256')
      let size = 0
      for await (const chunk of content) {
        hash.update(chunk)
        size += chunk.byteLength
      }
      if (size !== file.size || hash.digest('hex') !== file.sha256) {
        throw new PackageError('content_mismatch', `${file.path} of ${name}@${version} does not match its signed manifest`)
      }
    }
  }

  /** One pass over a file's bytes in the package: inner nodes into the store, the plain file staged, sha256 taken. */
  private async importFile (path: string, offset: number, file: Manifest['files'][number], chunkSize: number, written: Set<string>, staged: StagedFiles): Promise<void> {
    const blocks = this.requireBlocks()
    const digest = await digestContent(staged.write(file.path, packageFileBytes(path, offset, file.size)), chunkSize, async (cid, block) => {
      written.add(cid.toString())
      // raw leaves are not stored as blocks: their bytes are in the model's files (LeafIndex)
      if (cid.code !== RAW) await blocks.put(cid, block)
    })
    assertDigestMatches(file, digest)
  }

  private async deleteUnreferenced (candidates: Set<string>): Promise<void> {
    const live = new Set(this.entries.flatMap((e) => e.blocks))
    const store = this.requireBlocks()
    for (const cid of candidates) {
      if (!live.has(cid)) await store.delete(CID.parse(cid))
    }
  }

  private toStored (entry: RegistryEntry): StoredModel {
    const { manifest } = entry.envelope
    return { name: manifest.name, version: manifest.version, manifest, addedAt: entry.addedAt, location: this.locationOf(manifest.name, manifest.version) }
  }

  private find (name: string, version: string): RegistryEntry | undefined {
    return this.entries.find((e) => e.envelope.manifest.name === name && e.envelope.manifest.version === version)
  }

  private require (name: string, version: string): RegistryEntry {
    const entry = this.find(name, version)
    if (entry == null) throw new ModelStoreError('model_not_found', 404, `no model ${name}@${version} here`)
    return entry
  }

  private requireBlocks (): FsBlockstore {
    if (this.blocks == null) throw new Error('the model store is not started')
    return this.blocks
  }

  private async saveRegistry (): Promise<void> {
    await writeFileAtomic(this.registryPath, JSON.stringify({ version: 1, entries: this.entries }))
  }

  /** Registry changes run one at a time: concurrent publishes and removals never interleave. */
  private async serial<T> (task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task)
    // the caller gets run's error; the queue only has to go on with the next task
    this.queue = run.catch(() => {})
    return await run
  }
}
