/**
 * Logging: pino JSON lines on stderr, pretty only on a terminal.
 *
 * @example
 * import { createLogger } from '../log/index.ts'
 *
 * const log = await createLogger({ level: 'info', name: 'node-a' })
 * log.child({ service: 'models' }).info({ model: 'llama@1.0.0' }, 'model published')
 */
export { createLogger } from './logger.ts'
