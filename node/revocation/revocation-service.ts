import type { Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { ParsedCrl } from '../../ca/index.ts'
import { CRL_TOPIC } from '../../protocols/ids.ts'
import { BkgError } from '../../lib/bkg-error.ts'
import type { Host } from '../p2p/index.ts'
import { admissionVerdict, toValidatorResult, type GossipVerdict } from '../pubsub/index.ts'
import type { AdmittedPeers, CrlOffer, Trust } from '../admission/index.ts'

export interface RevocationInit {
  /** how often admitted peers' certificates are re-checked (expiry while connected) */
  recheckIntervalMs: number
}

export interface RevocationDeps {
  host: Host
  trust: Trust
  peers: AdmittedPeers
  log: Logger
}

/** a CRL the operator handed in was refused: forbidden, crl_stale, crl_untrusted */
export class CrlRejectedError extends BkgError {}

const REVOKED = 'cert_revoked'
/** A revoked peer stays out until a newer CRL no longer lists it. */
const REVOCATION_DENIAL_MS = 100 * 365 * 24 * 3600_000

/**
 * Spreads CA-signed CRLs through the mesh on CRL_TOPIC and drops every admitted peer a newer CRL
 * revokes; also drops peers whose certificate expired while they were connected.
 */
export class RevocationService {
  private readonly deps: RevocationDeps
  private readonly init: RevocationInit
  private timer?: NodeJS.Timeout

  constructor (init: RevocationInit, deps: RevocationDeps) {
    this.init = init
    this.deps = deps
  }

  start (): void {
    const { pubsub } = this.deps.host.services
    pubsub.topicValidators.set(CRL_TOPIC, async (source, message) => toValidatorResult[await this.validate(source, message)])
    pubsub.subscribe(CRL_TOPIC)
    this.timer = setInterval(() => { void this.sweep() }, this.init.recheckIntervalMs)
    this.timer.unref()
  }

  stop (): void {
    const { pubsub } = this.deps.host.services
    clearInterval(this.timer)
    pubsub.unsubscribe(CRL_TOPIC)
    pubsub.topicValidators.delete(CRL_TOPIC)
  }

  /**
   * Adopts a CRL handed to this node by its operator and spreads it. Only a node whose own
   * certificate carries the `admin` role spreads CRLs; the CA signature is what every node checks.
   */
  /** The newest CA-signed CRL this node honours: its number, the revoked serials, the PEM. */
  current (): { number: string | null, revoked: string[], pem: string | null } {
    const crl = this.deps.trust.crl
    return { number: crl?.number.toString() ?? null, revoked: crl == null ? [] : [...crl.revoked.keys()], pem: crl?.pem ?? null }
  }

  async publish (pem: string): Promise<{ number: string, revoked: number, dropped: string[], recipients: number }> {
    if (!this.deps.trust.own.roles.includes('admin')) {
      throw new CrlRejectedError('forbidden', 403, 'this node\'s certificate lacks the admin role: publish the CRL through an admin node')
    }
    const offer = await this.deps.trust.offerCrl(pem)
    if (!offer.accepted) {
      throw offer.reason === 'stale'
        ? new CrlRejectedError('crl_stale', 409, offer.message)
        : new CrlRejectedError('crl_untrusted', 400, offer.message)
    }
    const dropped = await this.enforce(offer.crl)
    const result = await this.deps.host.services.pubsub.publish(CRL_TOPIC, new TextEncoder().encode(offer.crl.pem))
    return { number: offer.crl.number.toString(), revoked: offer.crl.revoked.size, dropped, recipients: result.recipients.length }
  }

  /** Disconnects and refuses every admitted peer whose certificate the CRL lists. */
  async enforce (crl: ParsedCrl): Promise<string[]> {
    const { host, peers, log } = this.deps
    peers.liftDenials(REVOKED)
    const dropped: string[] = []
    for (const [peerId, cert] of [...peers.entries()]) {
      if (!crl.revoked.has(cert.serial)) continue
      dropped.push(peerId)
      peers.deny(peerId, { code: REVOKED, message: `certificate ${cert.serial} revoked by CRL ${crl.number}` }, REVOCATION_DENIAL_MS)
      await hangUp(host, peerId, log)
    }
    if (dropped.length > 0) log.warn({ crlNumber: crl.number.toString(), dropped }, 'dropped revoked peers')
    return dropped
  }

  private async validate (source: PeerId, message: Message): Promise<GossipVerdict> {
    const admission = admissionVerdict(this.deps.peers, source, message)
    if (admission !== 'accept' || message.type !== 'signed') return admission
    // CRLs originate at admin nodes; a neighbour's role is known, a farther origin's is vouched
    // for by the neighbour that validated it, and the CA signature is checked either way
    const origin = this.deps.peers.get(message.from)
    if (origin != null && !origin.roles.includes('admin')) return 'reject'
    let offer: CrlOffer
    try {
      offer = await this.deps.trust.offerCrl(new TextDecoder().decode(message.data))
    } catch (err) {
      this.deps.log.error({ err }, 'could not store a CRL')
      return 'ignore'
    }
    if (!offer.accepted) return offer.reason === 'stale' ? 'ignore' : 'reject'
    this.deps.log.info({ crlNumber: offer.crl.number.toString(), from: message.from.toString() }, 'adopted a CRL from the mesh')
    await this.enforce(offer.crl)
    return 'accept'
  }

  private async sweep (): Promise<void> {
    const { host, trust, peers, log } = this.deps
    for (const [peerId, cert] of [...peers.entries()]) {
      const problem = trust.stillValid(cert)
      if (problem == null) continue
      peers.deny(peerId, { code: problem.code, message: problem.message }, REVOCATION_DENIAL_MS)
      await hangUp(host, peerId, log)
    }
  }
}

async function hangUp (host: Host, peerId: string, log: Logger): Promise<void> {
  const connections = host.getConnections().filter((connection) => connection.remotePeer.toString() === peerId)
  await Promise.all(connections.map(async (connection) => {
    try {
      await connection.close()
    } catch (err) {
      log.debug({ err, peer: peerId }, 'closing connection failed; aborting it')
      connection.abort(err as Error)
    }
  }))
}
