import { randomBytes } from 'node:crypto'
import { chmod, open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/**
 * Write a file so that readers see either the old or the new content, never a torn one, and a
 * crash leaves one of the two: a temp file in the same directory (created exclusively, hidden,
 * named after the file), fsync, chmod, rename. A failure at any step removes the temp file.
 */
export async function writeFileAtomic (path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const handle = await open(tmp, 'wx', mode)
    try {
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }
    // open's mode is masked by the umask; the file gets exactly `mode`
    await chmod(tmp, mode)
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

/** Secrets (keys, tokens) are readable by the owner only. */
export async function writeSecretFile (path: string, data: string | Uint8Array): Promise<void> {
  await writeFileAtomic(path, data, 0o600)
}

/** Whether `path` exists; an error other than "no such file" (e.g. permission denied) is thrown. */
export async function exists (path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}
