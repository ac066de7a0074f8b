/** A connection refused during admission; `code` is a CaError code or an admission-specific one. */
import { BkgError } from '../../lib/bkg-error.ts'
export class AdmissionRefusedError extends BkgError {
  constructor (code: string, message: string) {
    super(code, 403, message)
  }
}
