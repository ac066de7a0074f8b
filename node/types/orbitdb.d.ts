// The parts of @orbitdb/core 4 (plain JavaScript, no type declarations) that BKG uses.
declare module '@orbitdb/core' {
  import type { EventEmitter } from 'node:events'

  export interface LogEntry {
    hash: string
    id: string
    identity: string
    payload: { op: 'PUT' | 'DEL', key: string, value: unknown }
  }

  export interface AccessControllerInstance {
    type: string
    address: string
    write: string[]
    canAppend: (entry: LogEntry) => Promise<boolean>
  }

  export type AccessControllerFactory = (init: { orbitdb: unknown, identities: unknown, address?: string, name?: string }) => Promise<AccessControllerInstance>

  export interface KeyValueDatabase {
    address: string
    events: EventEmitter
    put: (key: string, value: unknown) => Promise<string>
    get: (key: string) => Promise<unknown>
    all: () => Promise<Array<{ key: string, value: unknown, hash: string }>>
    close: () => Promise<void>
  }

  export interface OrbitDB {
    id: string
    open: (address: string, options?: { type?: string, AccessController?: AccessControllerFactory, sync?: boolean }) => Promise<KeyValueDatabase>
    stop: () => Promise<void>
  }

  export function createOrbitDB (init: { ipfs: unknown, id?: string, directory?: string }): Promise<OrbitDB>
  export function useAccessController (controller: ((...args: any[]) => AccessControllerFactory) & { type: string }): void
}
