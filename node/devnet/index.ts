/**
 * `npm start` / `bkg devnet`: a local mesh of real node processes with a throwaway CA, and the
 * spawning of one `bkg start` process that tests, benches and the devnet share.
 *
 * @example
 * import { startDevnet, spawnNode } from '../devnet/index.ts'
 *
 * const nodes = await startDevnet({ dir: '/tmp/devnet', nodes: 3, basePort: 0, logLevel: 'info' })
 * const node = await spawnNode({ args: ['--data', dataDir, '--api', '127.0.0.1:0'] })
 * node.started.api                     // from its machine-readable `started` line
 * await node.stop()
 */
export { devnetRoles, prepareDevnet, provisionNode, startDevnet, type DevnetNode, type DevnetOptions } from './devnet.ts'
export {
  CLI_ENTRY, NODE_RUNTIME_ENV, NODE_RUNTIME_FLAGS, nodeRuntime, NodeStartError, spawnNode, type NodeProcess, type SpawnNodeOptions,
  type StartedLine
} from './node-process.ts'
export { DEVNET_MODEL_ID, serveDevnetModel } from './test-model.ts'
