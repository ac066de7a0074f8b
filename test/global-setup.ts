import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { database } from '../node/db/index.ts'
import { defaultCacheDir } from '../node/config/index.ts'

/**
 * Creates the cached empty PGlite template once before any suite runs. On a fresh machine the
 * first database takes 5-19 s to create; without this, every suite's first node would create
 * its own at the same moment, on two cores, and suites would time out waiting for each other.
 */
export default async function setup (): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bkg-template-'))
  const db = database({ dir: join(dir, 'db'), templateDir: defaultCacheDir() })({ log: pino({ level: 'silent' }) })
  try {
    await db.open()
  } finally {
    await db.stop()
    await rm(dir, { recursive: true, force: true })
  }
}
