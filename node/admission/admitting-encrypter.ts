import type {
  ConnectionEncrypter, MessageStream, SecureConnectionOptions, SecuredConnection
} from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { CaError, type NodeCertificate, type ParsedCrl } from '../../ca/index.ts'
import { ADMISSION_PROTOCOL } from '../../protocols/ids.ts'
import {
  AdmissionFrameError, MAX_ADMISSION_FRAME_BYTES,
  decodeHello, decodeVerdict, encodeFrame, type AdmissionVerdict
} from '../../protocols/admission.ts'
import type { AdmittedPeers } from './admitted-peers.ts'
import { AdmissionRefusedError } from './errors.ts'
import type { Trust } from './trust.ts'

export interface AdmissionOptions {
  /** a peer that has not completed the exchange by then is disconnected */
  timeoutMs: number
  /** how long a peer that failed admission is refused before it may try again */
  rejectCooldownMs: number
}

export interface AdmissionDeps {
  trust: Trust
  peers: AdmittedPeers
  log: Logger
  onOutcome?: (outcome: 'admitted' | 'rejected', code: string) => void
  /** a peer handed us a newer CRL during admission */
  onCrlAdopted?: (crl: ParsedCrl) => void
}

/**
 * Wraps the Noise encrypter: once Noise has authenticated the remote PeerId, both sides exchange
 * certificates over the fresh secure channel (ADMISSION_PROTOCOL) before any stream muxer exists.
 * A peer that fails never gets a muxed connection, so identify, the DHT, gossipsub and every later
 * protocol never see it.
 */
export function admittingEncrypter<C> (
  inner: (components: C) => ConnectionEncrypter,
  deps: AdmissionDeps,
  options: AdmissionOptions
): (components: C) => ConnectionEncrypter {
  return (components) => new AdmittingEncrypter(inner(components), deps, options)
}

class AdmittingEncrypter implements ConnectionEncrypter {
  readonly protocol: string
  private readonly inner: ConnectionEncrypter
  private readonly deps: AdmissionDeps
  private readonly options: AdmissionOptions

  constructor (inner: ConnectionEncrypter, deps: AdmissionDeps, options: AdmissionOptions) {
    this.inner = inner
    this.deps = deps
    this.options = options
    this.protocol = inner.protocol
  }

  async secureInbound (connection: MessageStream, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    return await this.admit(await this.inner.secureInbound(connection, options), options)
  }

  async secureOutbound (connection: MessageStream, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    return await this.admit(await this.inner.secureOutbound(connection, options), options)
  }

  private async admit (secured: SecuredConnection, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    const { trust, peers, log } = this.deps
    const remote = secured.remotePeer.toString()
    const denial = peers.denial(remote)
    if (denial != null) {
      const err = new AdmissionRefusedError(denial.code, `peer ${remote} is refused: ${denial.message}`)
      await this.tellRefused(secured, { ok: false, code: denial.code, message: err.message })
      secured.connection.abort(err)
      this.deps.onOutcome?.('rejected', denial.code)
      throw err
    }

    const signals = [AbortSignal.timeout(this.options.timeoutMs)]
    if (options?.signal != null) signals.push(options.signal)
    const signal = AbortSignal.any(signals)
    const channel = lpStream(secured.connection, { maxDataLength: MAX_ADMISSION_FRAME_BYTES })

    let cert: NodeCertificate | undefined
    try {
      const crl = trust.crl?.pem
      await channel.write(encodeFrame({ protocol: ADMISSION_PROTOCOL, cert: trust.certPem, ...(crl != null ? { crl } : {}) }), { signal })
      const hello = decodeHello((await channel.read({ signal })).subarray())
      if (hello.crl != null) {
        const offer = await trust.offerCrl(hello.crl)
        if (offer.accepted) {
          log.info({ peer: remote, crlNumber: offer.crl.number.toString() }, 'adopted a newer CRL from a peer')
          this.deps.onCrlAdopted?.(offer.crl)
        }
      }
      let verdict: AdmissionVerdict
      try {
        cert = trust.verifyPeer(hello.cert, remote)
        verdict = { ok: true }
      } catch (err) {
        if (!(err instanceof CaError)) throw err
        verdict = { ok: false, code: err.code, message: err.message }
      }
      await channel.write(encodeFrame(verdict), { signal })
      const theirs = decodeVerdict((await channel.read({ signal })).subarray())
      if (!verdict.ok) throw new AdmissionRefusedError(verdict.code, verdict.message)
      if (!theirs.ok) throw new AdmissionRefusedError('refused_by_peer', `peer refused our certificate: ${theirs.code}: ${theirs.message}`)
    } catch (err) {
      const refusal = ownCertificateRefusal(trust, toRefusal(err, signal))
      // A peer that refused *us* is not at fault; everything else is kept out for a while.
      if (refusal.code !== 'refused_by_peer') {
        peers.deny(remote, { code: refusal.code, message: refusal.message }, this.options.rejectCooldownMs)
      }
      log.warn({ peer: remote, code: refusal.code }, `admission refused: ${refusal.message}`)
      this.deps.onOutcome?.('rejected', refusal.code)
      secured.connection.abort(refusal)
      throw refusal
    }

    if (cert == null) throw new AdmissionRefusedError('admission_failed', 'no certificate after a successful exchange')
    peers.admit(remote, cert)
    this.deps.onOutcome?.('admitted', 'ok')
    log.debug({ peer: remote, name: cert.name, roles: cert.roles }, 'peer admitted')
    return { ...secured, connection: channel.unwrap() }
  }

  /**
   * A denied peer still hears why, in the protocol's own order: our hello (with the CRL that may
   * name it) and a refusing verdict. Its frames are read before the connection goes, because a
   * connection closed with unread data is reset and the reset can swallow what we sent; so a
   * revoked node learns it is revoked instead of seeing a reset. Best effort, and brief.
   */
  private async tellRefused (secured: SecuredConnection, verdict: AdmissionVerdict): Promise<void> {
    const signal = AbortSignal.timeout(Math.min(this.options.timeoutMs, DENIAL_NOTICE_MS))
    const channel = lpStream(secured.connection, { maxDataLength: MAX_ADMISSION_FRAME_BYTES })
    try {
      const crl = this.deps.trust.crl?.pem
      await channel.write(encodeFrame({ protocol: ADMISSION_PROTOCOL, cert: this.deps.trust.certPem, ...(crl != null ? { crl } : {}) }), { signal })
      await channel.write(encodeFrame(verdict), { signal })
      await channel.read({ signal })
      await channel.read({ signal })
    } catch {} // refused either way: a peer that hangs up first or is too slow only misses the reason
  }
}

/** how long a denied peer may take to read why it is refused */
const DENIAL_NOTICE_MS = 2000

/**
 * When this node's own certificate no longer holds by the CRL it now has (a peer's hello may just
 * have brought it), that is the reason, whatever the connection did: say so in the log.
 */
function ownCertificateRefusal (trust: Trust, refusal: AdmissionRefusedError): AdmissionRefusedError {
  const problem = trust.stillValid(trust.own)
  if (problem == null) return refusal
  return new AdmissionRefusedError(refusal.code === 'refused_by_peer' ? refusal.code : `own_${problem.code}`, `this node's own certificate is no longer valid (${problem.message}); ${refusal.message}`)
}

function toRefusal (err: unknown, signal: AbortSignal): AdmissionRefusedError {
  if (err instanceof AdmissionRefusedError) return err
  if (err instanceof AdmissionFrameError) return new AdmissionRefusedError(err.code, err.message)
  if (signal.aborted) return new AdmissionRefusedError('admission_timeout', 'no valid certificate exchange before the admission timeout')
  // a closed or reset stream rejects with a DOM Event, whose String() is "[object Event]"
  const message = err instanceof Error ? err.message : err instanceof Event ? `the peer closed the connection (${err.type})` : String(err)
  return new AdmissionRefusedError('admission_failed', `certificate exchange failed: ${message}`)
}
