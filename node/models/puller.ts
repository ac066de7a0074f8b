import type { PeerId } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { CID } from 'multiformats/cid'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { Logger } from 'pino'
import semver from 'semver'
import { MANIFESTS_PROTOCOL } from '../../protocols/ids.ts'
import { ManifestResponse, MAX_MANIFEST_MESSAGE_BYTES } from '../../protocols/manifests.ts'
import { MAX_BLOCK_BYTES } from '../../protocols/blocks.ts'
import { decodeEnvelope, PackageError, totalSize } from '../../protocols/model-package.ts'
import type { EnvelopeOf, ModelStore, StoredModel } from './model-store.ts'
import { ModelStoreError } from './model-store.ts'
import { assertBlockMatches, layoutOf, RAW } from '../dag/index.ts'
import { findProviderIds, requestBlocks, type BlockDialer, type ProviderRouting } from './block-requests.ts'
import {
  DEFAULT_DIRECT_WRITE_SLOTS, DEFAULT_LEAVES_IN_FLIGHT, DEFAULT_PULL_BATCH, DEFAULT_PULL_MANIFEST_TIMEOUT_MS, DEFAULT_PULL_MAX_PROVIDER_FAILURES,
  DEFAULT_PULL_MAX_PROVIDERS, DEFAULT_PULL_PROVIDER_LOOKUP_MS, DEFAULT_PULL_REQUEST_TIMEOUT_MS, DEFAULT_PULL_STREAMS_PER_PROVIDER
} from './constants.ts'
import { FileAssembler } from './file-assembler.ts'
import { Limit } from '../../lib/limit.ts'
import { AlignedSlots } from './staged-file.ts'
import { verifyEnvelope, type VerifyOptions } from '../model-packages/index.ts'
import { parseUntrustedJson } from '../../protocols/untrusted-json.ts'

export interface PullProgress {
  state: 'resolving' | 'fetching' | 'verifying' | 'done' | 'failed'
  name: string
  version: string | null
  totalBytes: number
  bytes: number
  blocks: number
  /** blocks found on disk from an earlier, interrupted pull (not fetched again) */
  resumedBlocks: number
  /** block frames received from providers, duplicates included */
  fetchedBlocks: number
  peers: string[]
  /** `status`: the HTTP status of a BKG refusal (404 when no peer holds the model), for callers that answer with it */
  error: { code: string, message: string, status?: number } | null
}

/** Pull tuning; defaults in constants.ts. */
export interface PullerInit {
  batch?: number
  streamsPerProvider?: number
  maxProviderFailures?: number
  maxProviders?: number
  providerLookupMs?: number
  requestTimeoutMs?: number
  manifestTimeoutMs?: number
  directWriteSlots?: number
  leavesInFlight?: number
}

export interface PullerDeps {
  /** asking peers for envelopes (/bkg/manifests) and blocks (/bkg/blocks) */
  streams: BlockDialer
  /** connected peers: asked first for a model's envelope */
  connections: { getPeers: () => PeerId[] }
  /** providers of a file in the DHT */
  routing: ProviderRouting
  store: ModelStore
  trust: () => Omit<VerifyOptions, 'latestVersion' | 'now'>
  /** a provider sent a block that does not match its CID */
  penalize: (peer: PeerId, reason: string) => void
  log: Pick<Logger, 'debug' | 'warn'>
  /** verified envelopes announced over gossip, for models no connected peer holds */
  catalog: (name: string) => EnvelopeOf[]
}

/**
 * Fetches a model from its providers: the signed envelope first (verified before any byte is
 * fetched), then every file's DAG by want-lists spread over all providers. Each block must be one
 * the verified DAG asks for and must hash to its CID; blocks go straight to the store, so an
 * interrupted pull resumes from what is on disk. A provider that sends a bad block is dropped and
 * penalized, and its wants go to the others.
 */
export class Puller {
  private readonly deps: PullerDeps
  private readonly tuning: Required<PullerInit>
  private slots: AlignedSlots | undefined

  constructor (deps: PullerDeps, init: PullerInit = {}) {
    this.deps = deps
    this.tuning = {
      batch: init.batch ?? DEFAULT_PULL_BATCH,
      streamsPerProvider: init.streamsPerProvider ?? DEFAULT_PULL_STREAMS_PER_PROVIDER,
      maxProviderFailures: init.maxProviderFailures ?? DEFAULT_PULL_MAX_PROVIDER_FAILURES,
      maxProviders: init.maxProviders ?? DEFAULT_PULL_MAX_PROVIDERS,
      providerLookupMs: init.providerLookupMs ?? DEFAULT_PULL_PROVIDER_LOOKUP_MS,
      requestTimeoutMs: init.requestTimeoutMs ?? DEFAULT_PULL_REQUEST_TIMEOUT_MS,
      manifestTimeoutMs: init.manifestTimeoutMs ?? DEFAULT_PULL_MANIFEST_TIMEOUT_MS,
      directWriteSlots: init.directWriteSlots ?? DEFAULT_DIRECT_WRITE_SLOTS,
      leavesInFlight: init.leavesInFlight ?? DEFAULT_LEAVES_IN_FLIGHT
    }
  }

  /**
   * Made at the first pull and shared by all: a slot fits any block the protocol carries, and only
   * the pages of slots in use become resident. A set per pull is garbage that the collector takes
   * late (its memory lies outside V8's heap): in a variant measured today, repeated pulls grew the
   * puller's peak RSS by ~12 MiB each with a set per pull and by ~4 MiB with one shared set.
   */
  private get directWriteSlots (): AlignedSlots {
    this.slots ??= new AlignedSlots(this.tuning.directWriteSlots, MAX_BLOCK_BYTES)
    return this.slots
  }

  /** The model and whether this pull added it (false: it was held already). */
  async pull (name: string, version: string | null, progress: PullProgress): Promise<{ model: StoredModel, added: boolean }> {
    const held = version != null ? this.deps.store.get(name, version) : undefined
    if (held != null) return { model: held, added: false }
    const { envelope, sources } = await this.resolve(name, version)
    const { manifest } = envelope
    progress.version = manifest.version
    progress.totalBytes = totalSize(manifest)
    const already = this.deps.store.get(manifest.name, manifest.version)
    if (already != null) return { model: already, added: false }

    const providers = new Map<string, PeerId>(sources.map((peer) => [peer.toString(), peer]))
    // the peers that answered with the manifest, plus the files' providers in the DHT
    await Promise.all(manifest.files.map(async (file) => {
      for (const id of await findProviderIds(this.deps.routing, CID.parse(file.cid), { max: this.tuning.maxProviders, signal: AbortSignal.timeout(this.tuning.providerLookupMs) })) providers.set(id.toString(), id)
    }))
    progress.peers = [...providers.keys()]
    progress.state = 'fetching'
    // kept when the pull fails: the next pull of this model resumes from the leaves written there
    const staged = this.deps.store.stageFor(manifest.name, manifest.version)
    const assemblers: FileAssembler[] = []
    const slots = this.directWriteSlots
    try {
      for (const file of manifest.files) {
        const { file: handle, resumable } = await staged.open(file.path, file.size, slots)
        assemblers.push(new FileAssembler(handle, { ...file, resumable }))
      }
      const roots = manifest.files.map((file, i) => ({ cid: CID.parse(file.cid), at: { file: assemblers[i], offset: 0, length: file.size } }))
      const blocks = await this.fetch(roots, [...providers.values()], progress)
      progress.state = 'verifying'
      for (const assembler of assemblers) await assembler.finish()
      return { model: await this.deps.store.adoptFetched(envelope, blocks, staged), added: true }
    } finally {
      await Promise.all(assemblers.map(async (a) => {
        await a.close().catch((err: unknown) => { this.deps.log.warn({ err }, 'closing a staged model file failed: its descriptor may stay open') })
      }))
    }
  }

  /** Asks connected peers for the envelope; keeps only ones that verify; picks the wanted version. */
  private async resolve (name: string, version: string | null): Promise<{ envelope: EnvelopeOf, sources: PeerId[] }> {
    const peers = this.deps.connections.getPeers()
    const answers = await Promise.all(peers.map(async (peer) => {
      try {
        const envelope = await this.askManifest(peer, name, version)
        verifyEnvelope(envelope, { ...this.deps.trust(), latestVersion: this.deps.store.latestVersion(name) })
        return { peer, envelope }
      } catch (err) {
        // a peer without the model, or with an envelope that does not verify, is one source less
        this.deps.log.debug({ peer: peer.toString(), err }, 'a peer\'s manifest answer was not usable')
        return null
      }
    }))
    const matches = (envelope: EnvelopeOf): boolean => envelope.manifest.name === name && (version == null || envelope.manifest.version === version)
    const valid: Array<{ peer: PeerId | null, envelope: EnvelopeOf }> = answers.filter((a): a is { peer: PeerId, envelope: EnvelopeOf } => a != null && matches(a.envelope))
    // a holder that is not a neighbour: the gossiped envelope, with providers from the DHT
    for (const envelope of this.deps.catalog(name)) {
      if (!matches(envelope)) continue
      try {
        verifyEnvelope(envelope, { ...this.deps.trust(), latestVersion: this.deps.store.latestVersion(name) })
        valid.push({ peer: null, envelope })
      } catch (err) {
        // a gossiped envelope that no longer verifies (revoked signer, older than held) is not offered
        this.deps.log.debug({ name, version: envelope.manifest.version, err }, 'a gossiped model envelope does not verify')
      }
    }
    if (valid.length === 0) throw new ModelStoreError('model_not_found', 404, `no connected peer holds ${name}${version != null ? `@${version}` : ''} with a valid signature`)
    const best = semver.rsort(valid.map((v) => v.envelope.manifest.version))[0]
    const chosen = valid.filter((v) => v.envelope.manifest.version === best)
    return { envelope: chosen[0].envelope, sources: chosen.flatMap((c) => c.peer == null ? [] : [c.peer]) }
  }

  private async askManifest (peer: PeerId, name: string, version: string | null): Promise<EnvelopeOf> {
    const signal = AbortSignal.timeout(this.tuning.manifestTimeoutMs)
    const stream = await this.deps.streams.dialProtocol(peer, MANIFESTS_PROTOCOL, { signal })
    const channel = lpStream(stream, { maxDataLength: MAX_MANIFEST_MESSAGE_BYTES })
    await channel.write(new TextEncoder().encode(JSON.stringify(version == null ? { name } : { name, version })), { signal })
    const response = ManifestResponse.parse(parseUntrustedJson((await channel.read({ signal })).subarray()))
    await stream.close({ signal }).catch(() => {}) // the answer is read: a failed close costs nothing but the stream
    if ('error' in response) throw new Error(response.error)
    const envelope = decodeEnvelope(new TextEncoder().encode(JSON.stringify(response.envelope)))
    return envelope as EnvelopeOf
  }

  /**
   * Walks the DAGs from their roots, fetching what is not on disk, and writes every leaf to its
   * offset in its staged file; returns every block CID of the model. A block that several places
   * use (a repeated chunk) is fetched once and placed everywhere.
   */
  private async fetch (roots: Array<{ cid: CID, at: Placement }>, providers: PeerId[], progress: PullProgress): Promise<Set<string>> {
    const all = new Set<string>()
    const queue: CID[] = []
    const expected = new Set<string>()
    /** where each block still to be fetched goes */
    const waiting = new Map<string, Placement[]>()
    /** one place each leaf was written, to copy from when another place needs the same leaf */
    const placed = new Map<string, Placement>()
    const want = async (cid: CID, at: Placement): Promise<void> => {
      const key = cid.toString()
      const places = waiting.get(key)
      if (places != null) {
        places.push(at)
        return
      }
      if (all.has(key)) {
        // fetched or found earlier for another place: it is on disk now
        const copy = placed.get(key)
        await this.accept(cid, copy != null ? await copy.file.read(copy.offset, copy.length) : await this.requireHeld(cid), at, want, progress)
        return
      }
      all.add(key)
      // resume: a leaf an earlier attempt wrote to its place (checked again here), an inner node
      // in the blockstore (checked when it was stored), or a leaf another held model has
      const resumed = cid.code === RAW ? await at.file.existing(at.offset, at.length, cid) : null
      if (resumed != null) {
        progress.resumedBlocks++
        progress.blocks++
        progress.bytes += resumed.byteLength
        placed.set(key, at)
        return
      }
      const held = await this.deps.store.getBlock(cid)
      if (held != null) {
        progress.resumedBlocks++
        if (cid.code === RAW) placed.set(key, at)
        await this.accept(cid, held, at, want, progress)
        return
      }
      expected.add(key)
      waiting.set(key, [at])
      queue.push(cid)
    }
    const arrived = async (cid: CID, block: Uint8Array | Uint8ArrayList): Promise<void> => {
      const key = cid.toString()
      const places = waiting.get(key) ?? []
      waiting.delete(key)
      if (cid.code === RAW && places.length > 0) placed.set(key, places[0])
      for (const at of places) await this.accept(cid, block, at, want, progress)
    }
    for (const root of roots) await want(root.cid, root.at)

    const writing = new Limit(this.tuning.leavesInFlight)
    const healthy = new Map(providers.map((p) => [p.toString(), { peer: p, failures: 0 }]))
    let inflight = 0
    let wake: () => void = () => {}
    const changed = (): void => {
      const waiting = wake
      wake = () => {}
      waiting()
    }

    const worker = async (entry: { peer: PeerId, failures: number }): Promise<void> => {
      while (healthy.has(entry.peer.toString())) {
        if (queue.length === 0) {
          if (inflight === 0) return
          await new Promise<void>((resolve) => { const previous = wake; wake = () => { previous(); resolve() } })
          continue
        }
        // split what is known so far across every stream of every provider
        const size = Math.max(1, Math.min(this.tuning.batch, Math.ceil(queue.length / (healthy.size * this.tuning.streamsPerProvider))))
        const batch = queue.splice(0, size)
        inflight++
        try {
          const missing = await this.fetchBatch(entry.peer, batch, { expected, arrived, progress, writing })
          if (missing.length > 0) {
            // this provider lacks them; another may have them
            entry.failures++
            queue.push(...missing)
            if (entry.failures >= this.tuning.maxProviderFailures) healthy.delete(entry.peer.toString())
          }
        } catch (err) {
          const unfinished = batch.filter((cid) => expected.has(cid.toString()))
          queue.push(...unfinished)
          if (err instanceof PackageError) {
            healthy.delete(entry.peer.toString())
            this.deps.penalize(entry.peer, err.message)
            this.deps.log.warn({ peer: entry.peer.toString(), err: err.message }, 'dropped a provider that sent a bad block')
          } else {
            this.deps.log.debug({ peer: entry.peer.toString(), err: (err as Error).message }, 'block request failed; retrying elsewhere')
            if (++entry.failures >= this.tuning.maxProviderFailures) healthy.delete(entry.peer.toString())
          }
        } finally {
          inflight--
          progress.peers = [...healthy.keys()]
          changed()
        }
      }
    }
    const workers = [...healthy.values()].flatMap((entry) => Array.from({ length: this.tuning.streamsPerProvider }, async () => await worker(entry)))
    await Promise.all(workers)
    if (expected.size > 0) {
      throw new ModelStoreError('pull_incomplete', 502, `${expected.size} block(s) could not be fetched from ${providers.length} provider(s); blocks fetched so far are kept, pull again to resume`)
    }
    return all
  }

  /**
   * One want-list to one provider; returns the CIDs it did not have. Throws PackageError on a bad
   * block. A verified leaf is written while the next frames are read (up to `leavesInFlight` per
   * pull, then reading waits); an inner node is stored and expanded before going on.
   */
  private async fetchBatch (peer: PeerId, batch: CID[], pull: { expected: Set<string>, arrived: (cid: CID, block: Uint8ArrayList) => Promise<void>, progress: PullProgress, writing: Limit }): Promise<CID[]> {
    const { expected, arrived, progress, writing } = pull
    const missing: CID[] = []
    const written: Array<Promise<void>> = []
    let failure: unknown
    try {
      for await (const { cid, block } of requestBlocks(this.deps.streams, peer, batch, AbortSignal.timeout(this.tuning.requestTimeoutMs))) {
        if (block == null) {
          missing.push(cid)
          continue
        }
        progress.fetchedBlocks++
        if (!expected.has(cid.toString())) continue
        assertBlockMatches(cid, block)
        if (cid.code !== RAW) {
          // stored first: an inner node that could not be stored stays wanted
          await this.deps.store.putBlock(cid, [...block])
          expected.delete(cid.toString())
          await arrived(cid, block)
          continue
        }
        expected.delete(cid.toString())
        await writing.acquire()
        const leaf = arrived(cid, block).finally(() => { writing.release() })
        // awaited below; a failure must not count as unhandled meanwhile
        leaf.catch(() => {})
        written.push(leaf)
      }
    } catch (err) {
      failure = err
    }
    const failed = (await Promise.allSettled(written)).find((result) => result.status === 'rejected')
    if (failure != null) throw failure
    if (failed != null) throw failed.reason
    return missing
  }

  /** A verified block at its place: a leaf is written into its file, a node's children are wanted at theirs. */
  private async accept (cid: CID, block: Uint8Array | Uint8ArrayList, at: Placement, want: (cid: CID, at: Placement) => Promise<void>, progress: PullProgress): Promise<void> {
    progress.blocks++
    if (cid.code === RAW) {
      if (block.byteLength !== at.length) throw new PackageError('content_mismatch', `leaf ${cid.toString()} is ${block.byteLength} bytes where its parent says ${at.length}`)
      await at.file.put(at.offset, block)
      progress.bytes += block.byteLength
      return
    }
    const layout = layoutOf(cid, block instanceof Uint8Array ? block : block.subarray())
    if (layout.data != null) {
      await at.file.put(at.offset, layout.data)
      progress.bytes += layout.data.byteLength
    }
    for (const child of layout.children) await want(child.cid, { file: at.file, offset: at.offset + child.offset, length: child.length })
  }

  private async requireHeld (cid: CID): Promise<Uint8Array> {
    const block = await this.deps.store.getBlock(cid)
    if (block == null) throw new ModelStoreError('pull_incomplete', 502, `block ${cid.toString()} vanished from the store during the pull`)
    return block
  }
}

/** where a block's bytes go: a file of the model, the offset of the block's first byte, its byte count */
interface Placement {
  file: FileAssembler
  offset: number
  length: number
}
