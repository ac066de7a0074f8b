/**
 * The one error type of BKG: a refusal or failure with a stable machine-readable `code` and the
 * HTTP status that fits it. Services, wire-format decoders and the CA library throw it (or a
 * subclass that fixes its codes); the API turns it into `{ error: { code, message } }` in one
 * place, the CLI prints its message. Anything else that escapes is a bug and answers 500.
 *
 * @example
 * throw new BkgError('model_not_found', 404, `no model ${name}@${version} here`)
 */
export class BkgError extends Error {
  readonly code: string
  readonly status: number

  constructor (code: string, status: number, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = new.target.name
    this.code = code
    this.status = status
  }

  /** the name Fastify and its plugins read a thrown error's status by */
  get statusCode (): number {
    return this.status
  }
}
