import { readFile, rm } from 'node:fs/promises'
import type { Startable } from '../lib/startable.ts'
import { writeFileAtomic } from '../lib/fs.ts'
import type { ApiServer } from './api/server.ts'
import type { NodeConfig } from './config/index.ts'
import type { DataDirPaths } from './identity/index.ts'
import { describeListenFailure } from './listen-errors.ts'
import type { Host } from './p2p/index.ts'

/** The libp2p host, with listen failures told as one line. */
export function hostPart (host: Host): Startable {
  return {
    start: async () => {
      try {
        await host.start()
      } catch (err) {
        throw describeListenFailure(err, '--listen')
      }
    },
    stop: async () => { await host.stop() }
  }
}

/** The HTTP API: listens, then writes the data dir's api.json, which only this node removes again. */
export function apiPart (api: ApiServer, init: { paths: DataDirPaths, config: NodeConfig, peerId: string, onListening: (url: string) => void }): Startable {
  let url: string | undefined
  return {
    start: async () => {
      try {
        url = await api.listen(init.config.api)
      } catch (err) {
        throw describeListenFailure(err, '--api', init.config.api)
      }
      init.onListening(url)
      // the CLI finds the node by this file (and pins its TLS certificate to the PeerId)
      await writeFileAtomic(init.paths.apiAddress, JSON.stringify({ url, pid: process.pid, peerId: init.peerId }) + '\n')
    },
    stop: async () => {
      if (url != null && await writtenByThisProcess(init.paths.apiAddress)) await rm(init.paths.apiAddress, { force: true })
      await api.close()
    }
  }
}

/** Only the address this node wrote: never a file another process put there. */
async function writtenByThisProcess (path: string): Promise<boolean> {
  try {
    return (JSON.parse(await readFile(path, 'utf8')) as { pid?: number }).pid === process.pid
  } catch {
    // no file, or not ours to read: nothing of this node's to remove
    return false
  }
}
