import { mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { capWasmMemory } from './memory-cap.ts'
import { PYTHON_SNAPSHOT_REVISION, WASM_PAGE_BYTES } from './constants.ts'

/** the files of the pyodide package a guest loads (packages are never loaded: no wheels ship, and the CDN is the network) */
const PYODIDE_FILES = ['pyodide.mjs', 'pyodide.asm.mjs', 'python_stdlib.zip', 'pyodide-lock.json', 'package.json'] as const
const PYODIDE_WASM = 'pyodide.asm.wasm'

const require = createRequire(import.meta.url)

/** the installed pyodide package: its directory and version (the snapshot and the capped copies are per version) */
export function pyodidePackage (): { dir: string, version: string } {
  const manifest = require.resolve('pyodide/package.json')
  const { version } = require('pyodide/package.json') as { version: string }
  return { dir: dirname(manifest), version }
}

export function defaultPythonCacheDir (): string {
  return join(tmpdir(), `bkg-pyodide-${pyodidePackage().version}`)
}

async function exists (path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

/**
 * A directory that loads like the pyodide package but whose `pyodide.asm.wasm` cannot grow its
 * memory past `capBytes` (pyodide defines its own memory with a 4 GiB maximum; the declared
 * maximum is rewritten, as for WASI modules). The other files are symlinks to the package.
 * Built once per cap under `cacheDir`, in a temporary directory renamed into place, so
 * concurrent builders (two runtimes, two processes) never see a half-written one.
 */
export async function cappedPyodideDir (cacheDir: string, capBytes: number): Promise<string> {
  const pages = Math.floor(capBytes / WASM_PAGE_BYTES)
  const target = join(cacheDir, `cap-${pages}`)
  if (await exists(join(target, PYODIDE_WASM))) return target
  const pkg = pyodidePackage()
  await mkdir(cacheDir, { recursive: true })
  const temp = join(cacheDir, `.cap-${pages}-${randomBytes(6).toString('hex')}`)
  await mkdir(temp)
  try {
    const { bytes } = capWasmMemory(await readFile(join(pkg.dir, PYODIDE_WASM)), pages * WASM_PAGE_BYTES)
    await writeFile(join(temp, PYODIDE_WASM), bytes)
    for (const file of PYODIDE_FILES) await symlink(join(pkg.dir, file), join(temp, file))
    await rename(temp, target)
  } catch (error) {
    await rm(temp, { recursive: true, force: true })
    // another builder won the rename: its directory is as good as ours
    if (await exists(join(target, PYODIDE_WASM))) return target
    throw error
  }
  return target
}

/** where the start snapshot of this pyodide version lives (the worker that finds none makes it) */
export function pythonSnapshotPath (cacheDir: string): string {
  return join(cacheDir, `start-${pyodidePackage().version}-r${PYTHON_SNAPSHOT_REVISION}.snapshot`)
}
