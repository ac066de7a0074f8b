import { expect } from 'vitest'
import { SigV4Error } from '../../node/api/s3/sigv4.ts'
import fc from 'fast-check'

/** Replay a failure with BKG_FUZZ_SEED=<seed printed by fast-check>; BKG_FUZZ_RUNS scales the effort. */
const SEED = Number(process.env.BKG_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
const RUNS = Number(process.env.BKG_FUZZ_RUNS ?? 1000)
export const params = <T>(numRuns = RUNS): fc.Parameters<T> => ({ seed: SEED, numRuns })

// The credentials of the S3 examples in the AWS documentation ("Signature Calculations for the
// Authorization Header", "Authenticating Requests: Using Query Parameters", chunked uploads).
export const AKID = 'AKIAIOSFODNN7EXAMPLE'
export const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'

/** The SigV4Error `fn` throws (the test fails if it throws anything else, or nothing). */
export function sigv4Error (fn: () => unknown): SigV4Error {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(SigV4Error)
    return err as SigV4Error
  }
  throw new Error('expected a SigV4Error, nothing was thrown')
}
