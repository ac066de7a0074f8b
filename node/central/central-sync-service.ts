import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import type { SignedEvent } from '../../protocols/events.ts'
import type { Startable } from '../../lib/startable.ts'
import type { Database } from '../db/index.ts'
import { subscribeCentralChanges, type CentralChanges, type CentralChangesStatus } from './central-changes.ts'
import { CentralSync, type CentralSyncStatus } from './central-sync.ts'

export interface CentralSyncServiceInit {
  /** postgres://… of the central database (`--sync`) */
  url: string
  /** take central inserts back in through logical replication (`--sync-changes`) */
  changes: boolean
  /** this node's PeerId: its cursor's key, its rows' synced_by, its replication slot */
  nodeId: string
  certificatePem: string
}

/** The part of the event service central sync uses: new events wake it, central ones come in. */
export interface CentralEvents {
  on: (event: 'stored', listener: () => void) => unknown
  ready: () => Promise<void>
  acceptRemote: (events: SignedEvent[], certificateOf: (peer: string) => Promise<string | null>) => Promise<unknown>
}

export interface CentralSyncComponents {
  db: Database
  events: CentralEvents
  log: Logger
}

export interface CentralSyncService extends Startable {
  status: () => { sync: CentralSyncStatus, changes: CentralChangesStatus | null }
}

/**
 * Central sync (`--sync`): the node's events go to a central Postgres once the event database is
 * open, woken by every stored event; with `--sync-changes` central inserts flow back in through
 * the change stream. It runs after the node is up: admission never waits for a central server.
 */
export function centralSyncService (init: CentralSyncServiceInit): (components: CentralSyncComponents) => CentralSyncService {
  return ({ db, events, log }) => {
    const sync = new CentralSync({ url: init.url, nodeId: init.nodeId, certificatePem: init.certificatePem, db, log })
    let changes: CentralChanges | null = null
    let stopped = false
    return {
      start () {},
      afterStart () {
        stopped = false
        events.on('stored', () => { sync.notify() })
        events.ready().then(() => {
          if (stopped) return
          sync.start()
          if (!init.changes) return
          changes = subscribeCentralChanges({
            url: init.url,
            // one slot per node, named from its PeerId (slot names: a-z 0-9 _)
            slot: `bkg_${createHash('sha256').update(init.nodeId).digest('hex').slice(0, 40)}`,
            skipSyncedBy: init.nodeId,
            log: log.child({ service: 'central-changes' }),
            onEvent: async (event) => {
              const { syncedBy: _by, syncedAt: _at, ...signed } = event
              await events.acceptRemote([signed], async (peer) => await sync.certificateOf(peer))
            }
          })
        }).catch((err: unknown) => log.error({ err }, 'the event database did not open: no central sync'))
      },
      async stop () {
        stopped = true
        await changes?.close()
        changes = null
        await sync.stop()
      },
      status: () => ({ sync: sync.status(), changes: changes?.status() ?? null })
    }
  }
}
