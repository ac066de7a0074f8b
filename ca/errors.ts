/**
 * Errors raised by the operator CA library. Every refusal carries a stable
 * machine-readable `code` (used by the CLI, the admission layer and the API)
 * and a human-readable message.
 */
import { BkgError } from '../lib/bkg-error.ts'

export type CaErrorCode =
  | 'csr_malformed'
  | 'csr_bad_signature'
  | 'csr_missing_proof'
  | 'csr_bad_proof'
  | 'cert_malformed'
  | 'cert_untrusted'
  | 'cert_expired'
  | 'cert_not_yet_valid'
  | 'cert_revoked'
  | 'cert_peer_mismatch'
  | 'cert_is_ca'
  | 'crl_malformed'
  | 'crl_untrusted'
  | 'crl_stale'
  | 'ca_exists'
  | 'ca_missing'
  | 'ca_passphrase_required'
  | 'ca_passphrase_wrong'
  | 'serial_unknown'
  | 'invalid_role'
  | 'invalid_namespace'
  | 'invalid_san'

export class CaError extends BkgError {
  declare readonly code: CaErrorCode

  constructor (code: CaErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, code === 'crl_stale' ? 409 : 400, message, options)
  }
}

export function isCaError (err: unknown, code?: CaErrorCode): err is CaError {
  return err instanceof CaError && (code === undefined || err.code === code)
}

/** A short description of an unknown thrown value, for error messages. */
export function describeError (err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
