import type { Logger } from 'pino'

/** exit code after an uncaught exception (sysexits' EX_SOFTWARE): a supervisor restarts the node */
export const EXIT_UNCAUGHT = 70
const FATAL_STOP_MS = 5000

/**
 * What a node process does with errors that escaped every handler.
 *
 * - An unhandled promise rejection is one piece of work (a request, a frame, a timer's task) that
 *   failed where nobody awaited it. What it leaves behind is its own unfinished work, not broken
 *   shared state, so the node logs it with its stack and keeps serving: one bad input must not
 *   take the node down for everyone.
 * - An uncaught exception left a synchronous call stack at an unknown point, possibly half-way
 *   through changing shared state. The node logs it, tries an orderly stop for a few seconds (the
 *   databases flush, peers are told) and exits with EXIT_UNCAUGHT.
 */
export function installProcessGuards (log: Logger, stop: () => Promise<void>): void {
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason }, 'unhandled promise rejection (the node keeps running; this is a bug, please report it)')
  })
  let failing = false
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception: stopping the node')
    if (failing) return
    failing = true
    const force = setTimeout(() => process.exit(EXIT_UNCAUGHT), FATAL_STOP_MS)
    force.unref()
    stop().catch((stopErr: unknown) => log.error({ err: stopErr }, 'stop after the uncaught exception failed'))
      .finally(() => process.exit(EXIT_UNCAUGHT))
  })
}
