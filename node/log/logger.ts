import { pino, type Logger, type LevelWithSilent } from 'pino'
import pretty from 'pino-pretty'

/** JSON lines for machines; readable colour output when a person watches a terminal. */
export function createLogger (options: { level: LevelWithSilent, pretty?: boolean, name?: string }): Logger {
  const usePretty = options.pretty ?? process.stdout.isTTY === true
  const base = { level: options.level, ...(options.name != null ? { name: options.name } : {}) }
  if (!usePretty) return pino(base)
  return pino(base, pretty({ colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname', sync: true }))
}
