import { EventEmitter } from 'node:events'
import type { PeerId } from '@libp2p/interface'
import type { NodeCertificate } from '../../ca/index.ts'

export type DenialReason = { code: string, message: string }

interface Denial extends DenialReason {
  until: number
}

export interface AdmittedPeersEvents {
  admitted: [peerId: string, cert: NodeCertificate]
  rejected: [peerId: string, reason: DenialReason]
  removed: [peerId: string]
}

/**
 * Who is in: the certificate of every peer that passed admission, and a deny list of peers that
 * failed it (for a cool-down) or were revoked (until a newer CRL says otherwise).
 */
export class AdmittedPeers extends EventEmitter<AdmittedPeersEvents> {
  private readonly certs = new Map<string, NodeCertificate>()
  private readonly denials = new Map<string, Denial>()
  private readonly now: () => number

  constructor (now: () => number = Date.now) {
    super()
    this.now = now
  }

  admit (peerId: PeerId | string, cert: NodeCertificate): void {
    const id = peerId.toString()
    this.denials.delete(id)
    this.certs.set(id, cert)
    this.emit('admitted', id, cert)
  }

  /** Forget a peer that disconnected; its certificate is re-checked on the next connection. */
  remove (peerId: PeerId | string): void {
    const id = peerId.toString()
    if (this.certs.delete(id)) this.emit('removed', id)
  }

  deny (peerId: PeerId | string, reason: DenialReason, forMs: number): void {
    const id = peerId.toString()
    this.certs.delete(id)
    this.denials.set(id, { ...reason, until: this.now() + forMs })
    this.emit('rejected', id, reason)
  }

  denial (peerId: PeerId | string): DenialReason | undefined {
    const id = peerId.toString()
    const denial = this.denials.get(id)
    if (denial == null) return undefined
    if (denial.until <= this.now()) {
      this.denials.delete(id)
      return undefined
    }
    return { code: denial.code, message: denial.message }
  }

  isAdmitted (peerId: PeerId | string): boolean {
    return this.certs.has(peerId.toString())
  }

  get (peerId: PeerId | string): NodeCertificate | undefined {
    return this.certs.get(peerId.toString())
  }

  entries (): IterableIterator<[string, NodeCertificate]> {
    return this.certs.entries()
  }

  get size (): number {
    return this.certs.size
  }

  /** Lift every denial of a given kind, e.g. revocations that a newer CRL no longer lists. */
  liftDenials (code: string): void {
    for (const [id, denial] of this.denials) {
      if (denial.code === code) this.denials.delete(id)
    }
  }
}
