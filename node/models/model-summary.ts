import { totalSize } from '../../protocols/model-package.ts'
import type { CatalogEntry } from './model-service.ts'
import type { StoredModel } from './model-store.ts'

/** A held model as the API and MCP show it: its manifest's facts, size, where its files are. */
export interface ModelSummary {
  name: string
  version: string
  architecture: string
  licence: string
  publisher: { peerId: string, name: string, serial: string }
  createdAt: string
  addedAt: string
  totalSize: number
  /** directory on the node holding the checked files (for local runtimes) */
  location: string
  files: Array<{ path: string, size: number, sha256: string, cid: string }>
}

export function modelSummary (model: StoredModel): ModelSummary {
  const { manifest } = model
  return {
    name: manifest.name,
    version: manifest.version,
    architecture: manifest.architecture,
    licence: manifest.licence,
    publisher: manifest.publisher,
    createdAt: manifest.createdAt,
    addedAt: model.addedAt,
    totalSize: totalSize(manifest),
    location: model.location,
    files: manifest.files
  }
}

/** A model announced in the mesh, as the API and MCP list the catalog. */
export interface CatalogSummary {
  name: string
  version: string
  /** the publisher's node name */
  publisher: string
  /** the node that announced it */
  origin: string
  totalSize: number
  seenAt: string
}

export function catalogSummary (entry: CatalogEntry): CatalogSummary {
  const { manifest } = entry.envelope
  return { name: manifest.name, version: manifest.version, publisher: manifest.publisher.name, origin: entry.origin, totalSize: totalSize(manifest), seenAt: entry.seenAt }
}
