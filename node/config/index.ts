/**
 * A node's settings: the zod schema with every default (`NodeConfig`), and how `bkg start` merges
 * them from defaults < config file < environment < flags.
 *
 * @example
 * import { configFromEnv, readConfigFile, resolveConfig } from '../config/index.ts'
 *
 * const config = resolveConfig(await readConfigFile(paths.config, false), configFromEnv(process.env), flags)
 * const node = await createNode({ dataDir, config, log })
 */
export { defaultCacheDir } from './cache-dir.ts'
export { ConfigError, configFromEnv, ENV_VARS, readConfigFile, resolveConfig, splitList } from './load.ts'
export { LOG_LEVELS, NodeConfig, type NodeConfigInput } from './schema.ts'
