import { homedir } from 'node:os'
import { join } from 'node:path'

/**
 * The machine-wide cache of BKG (the empty-database template): `$BKG_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/bkg`, else `~/.cache/bkg`. Shared by every node and test run on the machine.
 */
export function defaultCacheDir (env: NodeJS.ProcessEnv = process.env): string {
  return env.BKG_CACHE_DIR ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'bkg')
}
