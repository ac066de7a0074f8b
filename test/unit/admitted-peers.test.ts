import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { beforeAll, describe, expect, it } from 'vitest'
import type { NodeCertificate } from '../../ca/index.ts'
import { AdmittedPeers } from '../../node/admission/admitted-peers.ts'

function fakeCert (peerId: string, name: string): NodeCertificate {
  return {
    serial: '01',
    peerId,
    name,
    roles: ['member'],
    namespaces: ['default'],
    dnsNames: [],
    ipAddresses: [],
    notBefore: new Date(0),
    notAfter: new Date(Date.UTC(2100, 0, 1)),
    issuer: 'Test Operator',
    pem: '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n',
    fingerprint: '00'
  }
}

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let t = start
  return { now: () => t, advance: (ms) => { t += ms } }
}

describe('AdmittedPeers', () => {
  let alice: PeerId
  let bob: PeerId

  beforeAll(async () => {
    alice = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    bob = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  })

  it('admits by PeerId or string, interchangeably', () => {
    const peers = new AdmittedPeers()
    const cert = fakeCert(alice.toString(), 'alice')
    peers.admit(alice, cert)
    expect(peers.isAdmitted(alice)).toBe(true)
    expect(peers.isAdmitted(alice.toString())).toBe(true)
    expect(peers.get(alice.toString())).toBe(cert)
    expect(peers.isAdmitted(bob)).toBe(false)
    expect(peers.size).toBe(1)
    expect([...peers.entries()].map(([id]) => id)).toEqual([alice.toString()])
  })

  it('emits admitted, rejected and removed events', () => {
    const peers = new AdmittedPeers()
    const events: string[] = []
    peers.on('admitted', (id, cert) => events.push(`admitted ${id} ${cert.name}`))
    peers.on('rejected', (id, reason) => events.push(`rejected ${id} ${reason.code}`))
    peers.on('removed', (id) => events.push(`removed ${id}`))
    peers.admit(alice, fakeCert(alice.toString(), 'alice'))
    peers.remove(alice)
    peers.remove(alice) // not admitted any more: no second event
    peers.deny(bob, { code: 'cert_invalid', message: 'bad' }, 1000)
    expect(events).toEqual([`admitted ${alice} alice`, `removed ${alice}`, `rejected ${bob} cert_invalid`])
  })

  it('a denial removes the admission and lasts for its cool-down', () => {
    const c = clock()
    const peers = new AdmittedPeers(c.now)
    peers.admit(alice, fakeCert(alice.toString(), 'alice'))
    peers.deny(alice, { code: 'cert_expired', message: 'expired' }, 60_000)
    expect(peers.isAdmitted(alice)).toBe(false)
    expect(peers.size).toBe(0)
    expect(peers.denial(alice)).toEqual({ code: 'cert_expired', message: 'expired' })
    c.advance(59_999)
    expect(peers.denial(alice.toString())?.code).toBe('cert_expired')
    c.advance(1)
    expect(peers.denial(alice)).toBeUndefined()
    // and it stays gone
    c.advance(-30_000)
    expect(peers.denial(alice)).toBeUndefined()
  })

  it('a zero cool-down denies nothing', () => {
    const c = clock()
    const peers = new AdmittedPeers(c.now)
    peers.deny(alice, { code: 'x', message: 'y' }, 0)
    expect(peers.denial(alice)).toBeUndefined()
  })

  it('a later denial replaces an earlier one', () => {
    const c = clock()
    const peers = new AdmittedPeers(c.now)
    peers.deny(alice, { code: 'first', message: '1' }, 10_000)
    peers.deny(alice, { code: 'second', message: '2' }, 1000)
    expect(peers.denial(alice)?.code).toBe('second')
    c.advance(1000)
    expect(peers.denial(alice)).toBeUndefined()
  })

  it('admitting again lifts the denial', () => {
    const peers = new AdmittedPeers(clock().now)
    peers.deny(alice, { code: 'cert_invalid', message: 'bad' }, 60_000)
    peers.admit(alice, fakeCert(alice.toString(), 'alice'))
    expect(peers.denial(alice)).toBeUndefined()
    expect(peers.isAdmitted(alice)).toBe(true)
  })

  it('liftDenials lifts only the given kind', () => {
    const peers = new AdmittedPeers(clock().now)
    peers.deny(alice, { code: 'cert_revoked', message: 'revoked' }, Number.MAX_SAFE_INTEGER / 2)
    peers.deny(bob, { code: 'cert_invalid', message: 'bad' }, 60_000)
    peers.liftDenials('cert_revoked')
    expect(peers.denial(alice)).toBeUndefined()
    expect(peers.denial(bob)?.code).toBe('cert_invalid')
    peers.liftDenials('nothing-like-this')
    expect(peers.denial(bob)?.code).toBe('cert_invalid')
  })

  it('remove forgets an admitted peer but keeps no denial', () => {
    const peers = new AdmittedPeers(clock().now)
    peers.admit(bob, fakeCert(bob.toString(), 'bob'))
    peers.remove(bob.toString())
    expect(peers.isAdmitted(bob)).toBe(false)
    expect(peers.get(bob)).toBeUndefined()
    expect(peers.denial(bob)).toBeUndefined()
  })
})
