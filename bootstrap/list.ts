import { readFile } from 'node:fs/promises'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'

export class BootstrapListError extends Error {
  readonly code = 'bootstrap_list_invalid'
}

/**
 * A bootstrap list file: one multiaddr per line (ideally ending in /p2p/<PeerId>), `#` starts a
 * comment, blank lines are ignored. Bootstrap nodes are ordinary nodes whose certificate has the
 * `bootstrap` role; the list only says where to knock first.
 */
export function parseBootstrapList (text: string, source = 'bootstrap list'): Multiaddr[] {
  const addrs: Multiaddr[] = []
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/#.*$/, '').trim()
    if (line === '') return
    try {
      addrs.push(multiaddr(line))
    } catch {
      throw new BootstrapListError(`${source}:${index + 1}: "${line}" is not a multiaddr`)
    }
  })
  return addrs
}

export async function readBootstrapList (path: string, required: boolean): Promise<Multiaddr[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw new BootstrapListError(`cannot read bootstrap list ${path}: ${(err as Error).message}`)
  }
  return parseBootstrapList(text, path)
}

export function formatBootstrapList (addrs: Array<string | Multiaddr>): string {
  return ['# BKG bootstrap list: one multiaddr per line', ...addrs.map(String), ''].join('\n')
}
