/**
 * Models: the verified store of model packages (inner DAG nodes in blockstore-fs, leaves read
 * from the plain model files, a registry of signed manifests), the block exchange that serves
 * blocks and envelopes to peers, the puller that fetches a model envelope first and then its
 * blocks from many providers, and the catalog of manifests gossiped on `bkg/models/1`.
 * See docs/model-format.md.
 * Packing and verifying a `.bkg` file, which needs no node, is in `model-packages/`.
 *
 * @example
 * import { modelService, type StoredModel } from './models/index.ts'
 *
 * const models = modelService({ dir: paths.models })({
 *   peerId: host.peerId, streams: host, connections: host, contentRouting: host.contentRouting,
 *   pubsub: host.services.pubsub, trust, peers, penalize, log
 * })
 * await models.start()
 * const { model } = await models.publishFile('llama-1.0.0.bkg')   // verified, provided, announced
 * models.on('added', (model: StoredModel) => { ... })
 * models.store.list()
 *
 * // fetching single blocks from peers over /bkg/blocks/1.0.0 (used by replication's Helia)
 * const providers = await findProviderIds(host, cid, { max: 8, signal })
 * for await (const frame of requestBlocks(host, providers[0], [cid], signal)) { ... }
 */
export { findProviderIds, requestBlocks } from './block-requests.ts'
export { modelService, type ModelService, type ModelServiceComponents, type ModelServiceEvents, type ModelServiceInit } from './model-service.ts'
export type { StoredModel } from './model-store.ts'
export { catalogSummary, modelSummary, type CatalogSummary, type ModelSummary } from './model-summary.ts'
