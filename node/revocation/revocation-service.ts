import type { GossipSub, Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import type { ParsedCrl } from '../../ca/index.ts'
import { CRL_TOPIC } from '../../protocols/ids.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import { admissionVerdict, toValidatorResult, type GossipVerdict } from '../pubsub/index.ts'
import type { AdmittedPeers, CrlOffer, Trust } from '../admission/index.ts'
import { RECHECK_INTERVAL_MS, REVOCATION_DENIAL_MS, REVOKED } from './constants.ts'

export interface RevocationInit {
  /** how often admitted peers' certificates are re-checked (expiry while connected) */
  recheckIntervalMs?: number
  /** how long a revoked or expired peer stays refused (until a newer CRL lifts a revocation) */
  revocationDenialMs?: number
}

export interface RevocationComponents {
  /** the gossipsub service: the CRL topic's validator, subscription and publishing */
  pubsub: Pick<GossipSub, 'topicValidators' | 'subscribe' | 'unsubscribe' | 'publish'>
  /** the CRL this node honours, its own roles, CRL adoption, re-checking admitted certificates */
  trust: Pick<Trust, 'crl' | 'own' | 'offerCrl' | 'stillValid'>
  /** the admitted peers, their denials (the admission check reads isAdmitted and denial) */
  peers: Pick<AdmittedPeers, 'entries' | 'get' | 'deny' | 'liftDenials' | 'isAdmitted' | 'denial'>
  /** closes every connection to a peer */
  hangUp: (peerId: PeerId) => Promise<void>
  log: Pick<Logger, 'info' | 'warn' | 'error'>
}

/** a CRL the operator handed in was refused: forbidden, crl_stale, crl_untrusted */
export class CrlRejectedError extends BkgError {}

/**
 * Spreads CA-signed CRLs through the mesh on CRL_TOPIC and drops every admitted peer a newer CRL
 * revokes; also drops peers whose certificate expired while they were connected.
 */
export class RevocationService {
  private readonly components: RevocationComponents
  private readonly recheckIntervalMs: number
  private readonly revocationDenialMs: number
  private timer?: NodeJS.Timeout

  constructor (components: RevocationComponents, init: RevocationInit = {}) {
    this.components = components
    this.recheckIntervalMs = init.recheckIntervalMs ?? RECHECK_INTERVAL_MS
    this.revocationDenialMs = init.revocationDenialMs ?? REVOCATION_DENIAL_MS
  }

  start (): void {
    const { pubsub } = this.components
    pubsub.topicValidators.set(CRL_TOPIC, async (source, message) => toValidatorResult[await this.validate(source, message)])
    pubsub.subscribe(CRL_TOPIC)
    this.timer = setInterval(() => { void this.sweep() }, this.recheckIntervalMs)
    this.timer.unref()
  }

  stop (): void {
    const { pubsub } = this.components
    clearInterval(this.timer)
    pubsub.unsubscribe(CRL_TOPIC)
    pubsub.topicValidators.delete(CRL_TOPIC)
  }

  /** The newest CA-signed CRL this node honours: its number, the revoked serials, the PEM. */
  current (): { number: string | null, revoked: string[], pem: string | null } {
    const crl = this.components.trust.crl
    return { number: crl?.number.toString() ?? null, revoked: crl == null ? [] : [...crl.revoked.keys()], pem: crl?.pem ?? null }
  }

  /**
   * Adopts a CRL handed to this node by its operator and spreads it. Only a node whose own
   * certificate carries the `admin` role spreads CRLs; the CA signature is what every node checks.
   */
  async publish (pem: string): Promise<{ number: string, revoked: number, dropped: string[], recipients: number }> {
    const { trust, pubsub } = this.components
    if (!trust.own.roles.includes('admin')) {
      throw new CrlRejectedError('forbidden', 403, 'this node\'s certificate lacks the admin role: publish the CRL through an admin node')
    }
    const offer = await trust.offerCrl(pem)
    if (!offer.accepted) {
      throw offer.reason === 'stale'
        ? new CrlRejectedError('crl_stale', 409, offer.message)
        : new CrlRejectedError('crl_untrusted', 400, offer.message)
    }
    const dropped = await this.enforce(offer.crl)
    const result = await pubsub.publish(CRL_TOPIC, new TextEncoder().encode(offer.crl.pem))
    return { number: offer.crl.number.toString(), revoked: offer.crl.revoked.size, dropped, recipients: result.recipients.length }
  }

  /** Disconnects and refuses every admitted peer whose certificate the CRL lists. */
  async enforce (crl: ParsedCrl): Promise<string[]> {
    const { peers, log } = this.components
    peers.liftDenials(REVOKED)
    const dropped: string[] = []
    for (const [peerId, cert] of [...peers.entries()]) {
      if (!crl.revoked.has(cert.serial)) continue
      dropped.push(peerId)
      peers.deny(peerId, { code: REVOKED, message: `certificate ${cert.serial} revoked by CRL ${crl.number}` }, this.revocationDenialMs)
      await this.hangUp(peerId)
    }
    if (dropped.length > 0) log.warn({ crlNumber: crl.number.toString(), dropped }, 'dropped revoked peers')
    return dropped
  }

  private async validate (source: PeerId, message: Message): Promise<GossipVerdict> {
    const { peers, trust, log } = this.components
    const admission = admissionVerdict(peers, source, message)
    if (admission !== 'accept' || message.type !== 'signed') return admission
    // CRLs originate at admin nodes; a neighbour's role is known, a farther origin's is vouched
    // for by the neighbour that validated it, and the CA signature is checked either way
    const origin = peers.get(message.from)
    if (origin != null && !origin.roles.includes('admin')) return 'reject'
    let offer: CrlOffer
    try {
      offer = await trust.offerCrl(new TextDecoder().decode(message.data))
    } catch (err) {
      log.error({ err }, 'could not store a CRL')
      return 'ignore'
    }
    if (!offer.accepted) return offer.reason === 'stale' ? 'ignore' : 'reject'
    log.info({ crlNumber: offer.crl.number.toString(), from: message.from.toString() }, 'adopted a CRL from the mesh')
    await this.enforce(offer.crl)
    return 'accept'
  }

  /** Drops every admitted peer whose certificate is no longer good (expired while connected). */
  private async sweep (): Promise<void> {
    const { trust, peers } = this.components
    for (const [peerId, cert] of [...peers.entries()]) {
      const problem = trust.stillValid(cert)
      if (problem == null) continue
      peers.deny(peerId, { code: problem.code, message: problem.message }, this.revocationDenialMs)
      await this.hangUp(peerId)
    }
  }

  private async hangUp (peerId: string): Promise<void> {
    try {
      await this.components.hangUp(peerIdFromString(peerId))
    } catch (err) {
      // the peer is denied already: admission refuses it on its next connection either way
      this.components.log.warn({ err, peer: peerId }, 'hanging up on a dropped peer failed')
    }
  }
}

export function revocationService (init: RevocationInit = {}): (components: RevocationComponents) => RevocationService {
  return (components) => new RevocationService(components, init)
}
