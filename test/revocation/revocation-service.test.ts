import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { CaError, type NodeCertificate, type ParsedCrl } from '../../ca/index.ts'
import { AdmittedPeers, type CrlOffer } from '../../node/admission/index.ts'
import { CrlRejectedError, revocationService, type RevocationComponents, type RevocationService } from '../../node/revocation/index.ts'
import { CRL_TOPIC } from '../../protocols/ids.ts'
import { certificate, FakeGossipsub, makePeerId, signedMessage } from '../pubsub/fake-gossipsub.ts'

function crl (number: bigint, revokedSerials: string[]): ParsedCrl {
  return {
    number,
    issuer: 'Test Operator',
    thisUpdate: new Date(0),
    nextUpdate: null,
    revoked: new Map(revokedSerials.map((serial) => [serial, new Date(0)])),
    pem: `-----BEGIN X509 CRL-----\nCRL${number}\n-----END X509 CRL-----\n`
  }
}

/** Trust as the service sees it: its own certificate, the current CRL, and scripted answers. */
class FakeTrust {
  own: NodeCertificate
  crl: ParsedCrl | null = null
  offers: string[] = []
  nextOffer: CrlOffer | Error = { accepted: false, reason: 'untrusted', message: 'not set' }
  invalid = new Map<string, CaError>()

  constructor (own: NodeCertificate) {
    this.own = own
  }

  async offerCrl (pem: string): Promise<CrlOffer> {
    this.offers.push(pem)
    if (this.nextOffer instanceof Error) throw this.nextOffer
    if (this.nextOffer.accepted) this.crl = this.nextOffer.crl
    return this.nextOffer
  }

  stillValid (cert: NodeCertificate): CaError | null {
    return this.invalid.get(cert.serial) ?? null
  }
}

const silent = { info () {}, warn () {}, error () {} }

describe('RevocationService', () => {
  let self: PeerId
  let admin: PeerId
  let alice: PeerId
  let bob: PeerId
  let carol: PeerId
  let gossip: FakeGossipsub
  let peers: AdmittedPeers
  let trust: FakeTrust
  let hungUp: string[]
  let components: RevocationComponents
  let service: RevocationService

  beforeAll(async () => {
    [self, admin, alice, bob, carol] = await Promise.all([makePeerId(), makePeerId(), makePeerId(), makePeerId(), makePeerId()])
  })

  beforeEach(() => {
    gossip = new FakeGossipsub()
    peers = new AdmittedPeers()
    peers.admit(admin, certificate(admin, { serial: '01', roles: ['admin'] }))
    peers.admit(alice, certificate(alice, { serial: 'a1' }))
    peers.admit(bob, certificate(bob, { serial: 'b2' }))
    peers.admit(carol, certificate(carol, { serial: 'c3' }))
    trust = new FakeTrust(certificate(self, { serial: 'ff', roles: ['admin'] }))
    hungUp = []
    components = {
      pubsub: gossip.as(),
      trust,
      peers,
      hangUp: async (peer) => { hungUp.push(peer.toString()) },
      log: silent
    }
    service = revocationService({ recheckIntervalMs: 1000 })(components)
  })

  afterEach(() => {
    service.stop()
    vi.useRealTimers()
  })

  it('refuses to publish a CRL without the admin role, before looking at it', async () => {
    trust.own = certificate(self, { serial: 'ff', roles: ['member'] })
    const refused = service.publish('pem')
    await expect(refused).rejects.toBeInstanceOf(CrlRejectedError)
    await expect(refused).rejects.toMatchObject({ code: 'forbidden', status: 403 })
    expect(trust.offers).toEqual([])
    expect(gossip.published).toEqual([])
    expect(hungUp).toEqual([])
  })

  it('refuses a stale CRL (409) and an untrusted one (400) without spreading it', async () => {
    trust.nextOffer = { accepted: false, reason: 'stale', message: 'CRL number 1 is not newer than the current 2' }
    await expect(service.publish('old')).rejects.toMatchObject({ code: 'crl_stale', status: 409 })
    trust.nextOffer = { accepted: false, reason: 'untrusted', message: 'bad signature' }
    await expect(service.publish('forged')).rejects.toMatchObject({ code: 'crl_untrusted', status: 400 })
    expect(trust.offers).toEqual(['old', 'forged'])
    expect(gossip.published).toEqual([])
  })

  it('publishing an adopted CRL drops the peers it revokes and spreads it on the CRL topic', async () => {
    const list = crl(5n, ['a1', 'c3', 'dead'])
    trust.nextOffer = { accepted: true, crl: list }
    gossip.recipients = [admin, bob]

    const result = await service.publish(list.pem)

    expect(result).toEqual({ number: '5', revoked: 3, dropped: [alice.toString(), carol.toString()], recipients: 2 })
    expect(hungUp.sort()).toEqual([alice.toString(), carol.toString()].sort())
    expect(peers.isAdmitted(alice)).toBe(false)
    expect(peers.denial(alice)).toEqual({ code: 'cert_revoked', message: 'certificate a1 revoked by CRL 5' })
    expect(peers.denial(carol)?.code).toBe('cert_revoked')
    expect(peers.isAdmitted(bob)).toBe(true)
    expect(peers.denial(bob)).toBeUndefined()
    expect(gossip.published).toHaveLength(1)
    expect(gossip.published[0].topic).toBe(CRL_TOPIC)
    expect(new TextDecoder().decode(gossip.published[0].data)).toBe(list.pem)
    expect(service.current()).toEqual({ number: '5', revoked: ['a1', 'c3', 'dead'], pem: list.pem })
  })

  it('enforce lifts revocations a newer CRL no longer lists and goes on when a hang-up fails', async () => {
    const warnings: string[] = []
    components.log = { ...silent, warn: (_fields: unknown, message?: string) => { warnings.push(message ?? '') } }
    components.hangUp = async (peer) => {
      hungUp.push(peer.toString())
      if (peer.equals(alice)) throw new Error('connection reset')
    }
    expect(await service.enforce(crl(1n, ['a1', 'b2']))).toEqual([alice.toString(), bob.toString()])
    expect(hungUp).toEqual([alice.toString(), bob.toString()])
    expect(peers.denial(bob)?.code).toBe('cert_revoked')
    expect(warnings).toEqual(['hanging up on a dropped peer failed', 'dropped revoked peers'])

    // a newer CRL replaces the revocation denials: bob, no longer listed, may come back; alice
    // (disconnected, so not re-denied here) is refused at admission by the CRL itself
    peers.deny(alice, { code: 'rejected', message: 'bad proof' }, 60_000)
    expect(await service.enforce(crl(2n, ['a1', 'c3']))).toEqual([carol.toString()])
    expect(peers.denial(bob)).toBeUndefined()
    expect(peers.denial(carol)?.code).toBe('cert_revoked')
    // denials of another kind stay
    expect(peers.denial(alice)?.code).toBe('rejected')
  })

  it('follows CRL gossip: a CRL from an admin origin is adopted and enforced, others are not', async () => {
    service.start()
    expect(gossip.subscribed.has(CRL_TOPIC)).toBe(true)
    const validate = gossip.topicValidators.get(CRL_TOPIC)!

    // a member may not originate a CRL
    expect(await validate(alice, signedMessage(alice, CRL_TOPIC, 'pem'))).toBe(TopicValidatorResult.Reject)
    // a peer that is not admitted may not relay one
    expect(await validate(self, signedMessage(admin, CRL_TOPIC, 'pem'))).toBe(TopicValidatorResult.Reject)
    expect(trust.offers).toEqual([])

    trust.nextOffer = { accepted: false, reason: 'stale', message: 'old' }
    expect(await validate(bob, signedMessage(admin, CRL_TOPIC, 'old'))).toBe(TopicValidatorResult.Ignore)
    trust.nextOffer = { accepted: false, reason: 'untrusted', message: 'forged' }
    expect(await validate(bob, signedMessage(admin, CRL_TOPIC, 'forged'))).toBe(TopicValidatorResult.Reject)
    trust.nextOffer = new Error('disk full')
    expect(await validate(bob, signedMessage(admin, CRL_TOPIC, 'unsaved'))).toBe(TopicValidatorResult.Ignore)

    const list = crl(7n, ['c3'])
    trust.nextOffer = { accepted: true, crl: list }
    expect(await validate(bob, signedMessage(admin, CRL_TOPIC, list.pem))).toBe(TopicValidatorResult.Accept)
    expect(trust.offers.at(-1)).toBe(list.pem)
    expect(hungUp).toEqual([carol.toString()])
    expect(peers.denial(carol)?.code).toBe('cert_revoked')
  })

  it('the periodic sweep drops peers whose certificate expired while connected', async () => {
    vi.useFakeTimers()
    service.start()
    trust.invalid.set('b2', new CaError('cert_expired', 'certificate b2 expired'))

    await vi.advanceTimersByTimeAsync(999)
    expect(hungUp).toEqual([])

    await vi.advanceTimersByTimeAsync(1)
    expect(hungUp).toEqual([bob.toString()])
    expect(peers.isAdmitted(bob)).toBe(false)
    expect(peers.denial(bob)).toEqual({ code: 'cert_expired', message: 'certificate b2 expired' })
    expect(peers.isAdmitted(alice)).toBe(true)
    expect(peers.isAdmitted(carol)).toBe(true)
  })

  it('stop leaves the CRL topic and ends the sweep', async () => {
    vi.useFakeTimers()
    service.start()
    service.stop()
    expect(gossip.subscribed.has(CRL_TOPIC)).toBe(false)
    expect(gossip.topicValidators.has(CRL_TOPIC)).toBe(false)
    trust.invalid.set('a1', new CaError('cert_expired', 'expired'))
    await vi.advanceTimersByTimeAsync(5000)
    expect(hungUp).toEqual([])
  })
})
