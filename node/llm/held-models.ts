import { join } from 'node:path'
import type { Logger } from 'pino'
import { BkgError } from '../../lib/bkg-error.ts'
import { ModelIdSchema } from '../../protocols/infer.ts'
import type { ModelService, StoredModel } from '../models/index.ts'
import { readGgufFacts } from './gguf/gguf-header.ts'
import type { GgufFacts, ModelId } from './types.ts'

/** What the inference service needs of the model store. */
export type ModelSource = Pick<ModelService, 'list' | 'get' | 'verifyForUse' | 'startPull' | 'waitForJob' | 'on' | 'off'>

export interface HeldGguf {
  id: ModelId
  model: StoredModel
  file: { path: string, size: number, sha256: string }
  /** where the checked file lies on disk */
  path: string
}

export function parseModelId (id: string): { name: string, version: string } {
  if (!ModelIdSchema.safeParse(id).success) throw new BkgError('invalid_request', 400, `"${id}" is not a model id: NAME@VERSION, e.g. tiny-llama@1.0.0`)
  // a package name has no @
  const at = id.indexOf('@')
  return { name: id.slice(0, at), version: id.slice(at + 1) }
}

/** The GGUF file of a held package: the first `.gguf` in its manifest, or null. */
export function ggufOf (model: StoredModel): HeldGguf | null {
  const file = model.manifest.files.find((candidate) => candidate.path.toLowerCase().endsWith('.gguf'))
  if (file == null) return null
  return { id: `${model.name}@${model.version}`, model, file, path: join(model.location, file.path) }
}

/**
 * The GGUF models among held packages, and the checks before one reaches the native loader: the
 * package is verified again (signature, publisher against today's CRL, every file's hash), then
 * the GGUF header is read and sanity-checked in JS.
 */
export class HeldModels {
  private readonly source: ModelSource
  private readonly log: Logger
  /** header facts by file sha256: a file never changes under its hash */
  private readonly facts = new Map<string, GgufFacts | null>()

  constructor (source: ModelSource, log: Logger) {
    this.source = source
    this.log = log
  }

  list (): HeldGguf[] {
    return this.source.list().map(ggufOf).filter((held) => held != null)
  }

  find (id: ModelId): HeldGguf | null {
    const { name, version } = parseModelId(id)
    const model = this.source.get(name, version)
    return model == null ? null : ggufOf(model)
  }

  factsOf (held: HeldGguf): GgufFacts | null {
    return this.facts.get(held.file.sha256) ?? null
  }

  /** Reads the headers not read yet (for listings); a bad header is logged and listed without facts. */
  async readMissingFacts (): Promise<void> {
    for (const held of this.list()) {
      if (this.facts.has(held.file.sha256)) continue
      try {
        this.facts.set(held.file.sha256, await readGgufFacts(held.path))
      } catch (err) {
        this.facts.set(held.file.sha256, null)
        this.log.warn({ err, model: held.id }, 'a held model\'s GGUF header does not pass the checks')
      }
    }
  }

  /** A held model checked for use, or a refusal saying why not. */
  async verified (id: ModelId): Promise<{ held: HeldGguf, facts: GgufFacts }> {
    const { name, version } = parseModelId(id)
    const model = await this.source.verifyForUse(name, version)
    const held = ggufOf(model)
    if (held == null) throw new BkgError('llm_not_gguf', 422, `${id} holds no .gguf file`)
    const facts = await readGgufFacts(held.path)
    this.facts.set(held.file.sha256, facts)
    return { held, facts }
  }

  /** Fetches a model from the mesh with the node's pull path and waits until it is held. */
  async pull (id: ModelId, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const { name, version } = parseModelId(id)
    const job = this.source.startPull(name, version)
    const deadline = Date.now() + timeoutMs
    while (true) {
      signal?.throwIfAborted()
      const now = await this.source.waitForJob(job.id, Math.min(1000, Math.max(0, deadline - Date.now())))
      if (now?.state === 'done') return
      if (now == null || now.state === 'failed') {
        throw new BkgError(now?.error?.code ?? 'pull_failed', now?.error?.status ?? 502, `pulling ${id} failed: ${now?.error?.message ?? 'the job is gone'}`)
      }
      if (Date.now() >= deadline) throw new BkgError('pull_timeout', 504, `${id} did not arrive within ${Math.round(timeoutMs / 1000)} s (the pull goes on: job ${job.id})`)
    }
  }
}
