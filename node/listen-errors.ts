import { BkgError } from '../lib/bkg-error.ts'

/** The data dir's key and its certificate belong to different peers. */
export class NodeIdentityError extends BkgError {
  constructor (message: string) {
    super('identity_mismatch', 500, message)
  }
}

/** A listen or API address another process holds: an operator's choice to fix, not a crash. */
export class AddressInUseError extends BkgError {
  constructor (message: string, options?: ErrorOptions) {
    super('address_in_use', 500, message, options)
  }
}

/** Any other address the node cannot listen on (not local, no permission, unsupported). */
export class ListenError extends BkgError {
  constructor (message: string, options?: ErrorOptions) {
    super('listen_failed', 500, message, options)
  }
}

/**
 * One line an operator can act on for a listen failure. libp2p's own error lists every address
 * with a stack and advice about its fault tolerance setting; Fastify's is a bare EADDRINUSE.
 */
export function describeListenFailure (err: unknown, flag: '--listen' | '--api', apiAddress?: string): unknown {
  if (!(err instanceof Error)) return err
  const failures: Array<{ addr: string, reason: string }> = []
  if (err.name === 'UnsupportedListenAddressesError') {
    for (const match of err.message.matchAll(/^\s+(\/\S+): (?:\w*Error: )?(.+)$/gm)) failures.push({ addr: match[1], reason: match[2] })
  } else if (flag === '--api' && typeof (err as NodeJS.ErrnoException).code === 'string') {
    failures.push({ addr: apiAddress ?? '?', reason: `${(err as NodeJS.ErrnoException).code}: ${err.message}` })
  }
  if (failures.length === 0) return err
  const what = flag === '--listen' ? 'listen address' : 'API address'
  const busy = failures.filter((failure) => /EADDRINUSE/.test(failure.reason))
  if (busy.length > 0) {
    return new AddressInUseError(`${what} ${busy.map((failure) => failure.addr).join(', ')} is in use by another process: stop it, or choose another port with ${flag}`)
  }
  const first = failures[0]
  return new ListenError(`cannot listen on ${what} ${first.addr}: ${first.reason.replace(/^listen \w+: /, '')}; check ${flag}`)
}
