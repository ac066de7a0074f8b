/**
 * A refusal a service reports to its callers with an error code and the HTTP status that fits it;
 * the API turns it into `{ error: { code, message } }` without knowing the service.
 */
export class ServiceError extends Error {
  readonly code: string
  readonly status: number
  constructor (code: string, status: number, message: string) {
    super(message)
    this.name = 'ServiceError'
    this.code = code
    this.status = status
  }
}
