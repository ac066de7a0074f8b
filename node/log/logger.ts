import { pino, type Logger, type LevelWithSilent } from 'pino'

/**
 * JSON lines for machines; readable colour output when a person watches a terminal. Logs go to
 * stderr: stdout carries only what scripts read (`bkg start`'s `{"event":"started",…}` line
 * first). pino-pretty is loaded only for a terminal: it is ~9 MiB of a node's memory otherwise
 * spent on nothing.
 */
export async function createLogger (options: { level: LevelWithSilent, pretty?: boolean, name?: string }): Promise<Logger> {
  const usePretty = options.pretty ?? process.stderr.isTTY === true
  const base = { level: options.level, ...(options.name != null ? { name: options.name } : {}) }
  if (!usePretty) return pino(base, pino.destination({ dest: 2, sync: true }))
  const { default: pretty } = await import('pino-pretty')
  return pino(base, pretty({ colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname', sync: true, destination: 2 }))
}
