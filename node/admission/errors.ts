/** A connection refused during admission; `code` is a CaError code or an admission-specific one. */
export class AdmissionRefusedError extends Error {
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.name = 'AdmissionRefusedError'
    this.code = code
  }
}
