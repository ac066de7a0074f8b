/** A failure the CLI reports as one clear line on stderr with a non-zero exit. */
export class CliError extends Error {
  readonly exitCode: number
  constructor (message: string, exitCode = 1) {
    super(message)
    this.exitCode = exitCode
  }
}
