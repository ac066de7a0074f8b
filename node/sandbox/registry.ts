import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { BkgError } from '../../lib/bkg-error.ts'
import { writeFileAtomic } from '../../lib/fs.ts'

const Policy = z.object({
  timeoutMs: z.number().int(),
  memoryBytes: z.number().int(),
  outputBytes: z.number().int(),
  env: z.record(z.string(), z.string())
})

const Snapshot = z.object({
  id: z.string(),
  createdAt: z.string(),
  memoryBytes: z.number().int(),
  files: z.number().int(),
  storedBytes: z.number().int()
})

/** A sandbox as the node keeps it across restarts. */
export const SandboxRecord = z.object({
  id: z.string(),
  namespace: z.string(),
  language: z.enum(['js', 'python', 'wasm']),
  mode: z.enum(['quick', 'persistent']),
  policy: Policy,
  createdAt: z.string(),
  metrics: z.object({ cpuMs: z.number(), peakMemoryBytes: z.number(), executions: z.number().int(), snapshots: z.number().int() }),
  snapshots: z.array(Snapshot),
  origin: z.string().nullable(),
  /** the snapshot a stopped guest comes back from (after `stop`, a breach or a restart); null: a fresh guest */
  resumeFrom: z.string().nullable()
})
export type SandboxRecord = z.infer<typeof SandboxRecord>

const RegistryFile = z.object({ v: z.literal(1), sandboxes: z.array(SandboxRecord) })

/**
 * `<data>/sandboxes/sandboxes.json`: every sandbox and its snapshots, rewritten atomically after
 * each change, one write at a time.
 */
export class SandboxRegistry {
  private readonly path: string
  private tail: Promise<void> = Promise.resolve()

  constructor (path: string) {
    this.path = path
  }

  /** The sandboxes saved before; none for a new node. A file that is not ours stops the node, not our data. */
  async load (): Promise<SandboxRecord[]> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    let parsed: ReturnType<typeof RegistryFile.safeParse>
    try {
      parsed = RegistryFile.safeParse(JSON.parse(text))
    } catch (err) {
      throw new BkgError('sandbox_registry_corrupt', 500, `${this.path} is not JSON (${(err as Error).message}); move it aside to start without its sandboxes`)
    }
    if (!parsed.success) throw new BkgError('sandbox_registry_corrupt', 500, `${this.path} is not a sandbox registry (${parsed.error.issues[0].message}); move it aside to start without its sandboxes`)
    return parsed.data.sandboxes
  }

  /** Writes the records as they are when the write begins; resolves when they are on disk. */
  async save (records: () => SandboxRecord[]): Promise<void> {
    const write = this.tail.then(async () => {
      await writeFileAtomic(this.path, JSON.stringify({ v: 1, sandboxes: records() }), 0o600)
    })
    // the caller is told of a failed write; the next write still runs
    this.tail = write.catch(() => {})
    await write
  }
}
