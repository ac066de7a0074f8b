import { randomBytes } from 'node:crypto'
import { readFileSync, unlinkSync } from 'node:fs'
import { link, open, readFile, rename, rm } from 'node:fs/promises'
import { hostname } from 'node:os'
import { IdentityMissingError, type DataDirPaths } from './data-dir.ts'
import { BkgError } from '../../lib/bkg-error.ts'

/** What the lock file says about the node that holds the data dir. */
interface LockHolder {
  pid: number
  host: string
  /** the process's start time in clock ticks since boot (Linux /proc); tells a reused pid apart */
  procStart: string | null
  /** random per lock: only the holder removes it */
  nonce: string
  since: string
}

/** Another node runs on this data dir (or one on another host does, as far as can be told). */
export class DataDirLockedError extends BkgError {
  readonly pid: number
  constructor (message: string, pid: number) {
    super('data_dir_locked', 409, message)
    this.pid = pid
  }
}

/**
 * An exclusive claim on a node data dir: `<data>/node.lock`, created with O_EXCL, naming the
 * holder's pid. A lock whose process is gone (kill -9, power loss) is stale and taken over, so
 * nothing has to be cleaned by hand; a pid that was reused by another program is told apart by its
 * start time. Not an OS lock (Node has no flock): two nodes starting at the same instant on a
 * stale lock are handled by moving the stale file aside atomically and checking what was moved.
 */
export class DataDirLock {
  readonly path: string
  private readonly holder: LockHolder
  private released = false
  private readonly onExit = (): void => this.releaseSync()

  private constructor (path: string, holder: LockHolder) {
    this.path = path
    this.holder = holder
    // a node that exits through process.exit (a failed start, a forced shutdown) skips stop()
    process.once('exit', this.onExit)
  }

  static async acquire (paths: DataDirPaths): Promise<DataDirLock> {
    const path = paths.lock
    const holder: LockHolder = { pid: process.pid, host: hostname(), procStart: procStartOf(process.pid), nonce: randomBytes(8).toString('hex'), since: new Date().toISOString() }
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await createExclusive(path, holder, paths.dir)) return new DataDirLock(path, holder)
      const current = await readHolder(path)
      if (current === 'missing') continue
      if (current === 'unreadable') {
        // a starter is between creating and writing it: give it a moment before calling it stale
        await new Promise((resolve) => setTimeout(resolve, 100))
        if (await readHolder(path) === 'unreadable') await takeAside(path, null)
        continue
      }
      if (isAlive(current)) throw await lockedError(paths, current)
      const aside = await takeAside(path, current)
      if (aside != null && aside !== 'stale') throw await lockedError(paths, aside)
    }
    throw new DataDirLockedError(`could not lock ${paths.dir}: ${path} keeps changing (another node starting at the same time?)`, 0)
  }

  /** Removes the lock if it is still ours. */
  async release (): Promise<void> {
    if (this.released) return
    this.released = true
    process.removeListener('exit', this.onExit)
    const current = await readHolder(this.path)
    if (typeof current === 'object' && current.nonce === this.holder.nonce) await rm(this.path, { force: true })
  }

  private releaseSync (): void {
    if (this.released) return
    this.released = true
    try {
      const current = JSON.parse(readFileSync(this.path, 'utf8')) as LockHolder
      if (current.nonce === this.holder.nonce) unlinkSync(this.path)
    } catch {} // the exit handler: a lock already gone or unreadable is not ours to remove, and no logger runs this late
  }
}

async function createExclusive (path: string, holder: LockHolder, dir: string): Promise<boolean> {
  let handle
  try {
    handle = await open(path, 'wx', 0o644)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return false
    if (code === 'ENOENT') throw new IdentityMissingError(`no node identity in ${dir}: run \`bkg init --data ${dir}\` first`)
    throw err
  }
  try {
    await handle.writeFile(JSON.stringify(holder) + '\n')
  } finally {
    await handle.close()
  }
  return true
}

async function readHolder (path: string): Promise<LockHolder | 'missing' | 'unreadable'> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing'
    throw err
  }
  try {
    const parsed = JSON.parse(text) as LockHolder
    return Number.isInteger(parsed.pid) && parsed.pid > 0 ? parsed : 'unreadable'
  } catch {
    // a starter between open and write leaves a partial file: the caller retries on 'unreadable'
    return 'unreadable'
  }
}

/**
 * Moves the lock file aside (atomic: of several starters only one gets this file) and looks at
 * what it moved: the stale holder as expected, or a fresh live lock that a faster starter put in
 * place meanwhile, which goes back and wins.
 */
async function takeAside (path: string, expected: LockHolder | null): Promise<LockHolder | 'stale' | null> {
  const aside = `${path}.${randomBytes(6).toString('hex')}.stale`
  try {
    await rename(path, aside)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  const moved = await readHolder(aside)
  if (typeof moved === 'object' && moved.nonce !== expected?.nonce && isAlive(moved)) {
    await link(aside, path).catch(() => {}) // EEXIST: a third starter locked meanwhile, which refuses us just the same
    await rm(aside, { force: true })
    return moved
  }
  await rm(aside, { force: true })
  return 'stale'
}

function isAlive (holder: LockHolder): boolean {
  // a data dir shared with another machine: its pids mean nothing here, so assume it runs
  if (holder.host !== hostname()) return true
  if (holder.pid === process.pid) return true
  try {
    process.kill(holder.pid, 0)
  } catch (err) {
    // EPERM: the process exists but belongs to another user
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  const stat = procStat(holder.pid)
  // a killed node whose parent has not reaped it yet is a zombie: gone for our purpose
  if (stat?.state === 'Z' || stat?.state === 'X') return false
  return holder.procStart == null || stat == null || stat.start === holder.procStart
}

function procStartOf (pid: number): string | null {
  return procStat(pid)?.start ?? null
}

/** Fields 3 (state) and 22 (start time) of /proc/PID/stat, after the command name, which may hold spaces and parentheses. */
function procStat (pid: number): { state: string, start: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields.length > 19 ? { state: fields[0], start: fields[19] } : null
  } catch {
    // no /proc (not Linux) or the process just exited: unknown, and the callers then trust the pid alone
    return null
  }
}

async function lockedError (paths: DataDirPaths, holder: LockHolder): Promise<DataDirLockedError> {
  if (holder.host !== hostname()) {
    return new DataDirLockedError(`${paths.dir} is in use by a node on host ${holder.host} (pid ${holder.pid}, since ${holder.since}); if that node is gone, delete ${paths.lock}`, holder.pid)
  }
  let api = 'its API is not up yet'
  try {
    const address = JSON.parse(await readFile(paths.apiAddress, 'utf8')) as { url?: string, pid?: number }
    if (address.pid === holder.pid && address.url != null) api = `API ${address.url}`
  } catch {} // no address file yet (or a partial one): the message says the API is not up
  return new DataDirLockedError(`${paths.dir} is in use by a running node (pid ${holder.pid}, ${api}): stop it first, or give this node another --data DIR`, holder.pid)
}
