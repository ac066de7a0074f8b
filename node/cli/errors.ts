/** A failure the CLI reports as one clear line on stderr with a non-zero exit. */
export class CliError extends Error {
  readonly exitCode: number
  constructor (message: string, exitCode = 1) {
    super(message)
    this.exitCode = exitCode
  }
}

/**
 * Exit codes of every `bkg` command, documented in docs/operations.md ("Exit codes"): scripts
 * branch on them, so a code keeps its meaning once published.
 */
export const EXIT = {
  ok: 0,
  /** the operation failed or was refused */
  failed: 1,
  /** bad command line, option value, config file or BKG_* environment value */
  usage: 2,
  /** the data dir is not set up: no identity, certificate or CA certificate, or they do not match */
  notSetUp: 3,
  /** another running node holds the data dir */
  dataDirInUse: 4,
  /** a listen or API address is taken by another process */
  addressInUse: 5,
  /** stopped with Ctrl-C (SIGINT) */
  interrupted: 130
} as const

/** Expected conditions, by the `code` their errors carry. */
const EXIT_BY_CODE: Record<string, number> = {
  config_invalid: EXIT.usage,
  // option values the CA refuses as written
  invalid_san: EXIT.usage,
  invalid_role: EXIT.usage,
  invalid_namespace: EXIT.usage,
  identity_missing: EXIT.notSetUp,
  identity_mismatch: EXIT.notSetUp,
  data_dir_locked: EXIT.dataDirInUse,
  address_in_use: EXIT.addressInUse
}

/** The exit code for an error a command threw. */
export function exitCodeFor (err: unknown): number {
  if (err instanceof CliError) return err.exitCode
  // e.g. a devnet node that did not start: its own process's code says why
  const exitCode = (err as { exitCode?: unknown } | null)?.exitCode
  if (typeof exitCode === 'number' && Number.isInteger(exitCode) && exitCode > 0 && exitCode < 256) return exitCode
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? EXIT_BY_CODE[code] ?? EXIT.failed : EXIT.failed
}
