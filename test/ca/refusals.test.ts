import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Ed25519PrivateKey } from '@libp2p/interface'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CaError, createCrl, csrProofData, initCa, isNewerCrl, issueCrl, loadCa, parseCrl, parseNamespaces,
  parseNodeCertificate, parseRoles, revokeCertificate, signNodeCsr, verifyCrl, verifyNodeCertificate,
  verifyNodeCsr, OID_PEER_KEY_PROOF, PEER_URI_PREFIX, ROLES
} from '../../ca/index.ts'
import { signForgeCsr } from '../../ca/signed.ts'
import { forge, forgeAsn1FromDer, forgeOid, generateRsaKey, nameAttributes, toBinary } from '../../ca/x509.ts'
import { derToPem, expectCaError, makeNode, makeTempDir, openssl, pemToDer, type TestNode } from './helpers.ts'

const DAY = 86400_000

/** A CSR built by hand: SAN naming `peerId`, and a proof made by `proofKey` (or none). */
async function handmadeCsr (opts: {
  peerId?: string, proofKey?: Ed25519PrivateKey, proofSignature?: Uint8Array, name?: string
}): Promise<string> {
  const rsa = generateRsaKey()
  const csr = forge.pki.createCertificationRequest()
  csr.publicKey = rsa.publicKey
  csr.setSubject(nameAttributes(opts.name ?? 'handmade'))
  const extensions: unknown[] = []
  if (opts.peerId !== undefined) {
    extensions.push({ name: 'subjectAltName', altNames: [{ type: 6, value: PEER_URI_PREFIX + opts.peerId }] })
  }
  if ((opts.proofKey !== undefined || opts.proofSignature !== undefined) && opts.peerId !== undefined) {
    const sig = opts.proofSignature ?? await opts.proofKey!.sign(csrProofData(opts.peerId, rsa.spkiDer))
    const { asn1 } = forge
    extensions.push({
      id: forgeOid(OID_PEER_KEY_PROOF),
      value: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, toBinary(sig))
    })
  }
  if (extensions.length > 0) csr.setAttributes([{ name: 'extensionRequest', extensions }])
  return signForgeCsr(csr, rsa.privateKeyPem)
}

/** A CSR without the proof extension, made with plain forge (forge signs it itself). */
function forgeCsrWithoutProof (peerId: string): string {
  const rsa = generateRsaKey()
  const csr = forge.pki.createCertificationRequest()
  csr.publicKey = rsa.publicKey
  csr.setSubject([{ shortName: 'CN', value: 'no-proof' }])
  csr.setAttributes([{
    name: 'extensionRequest',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 6, value: PEER_URI_PREFIX + peerId }] }]
  }])
  csr.sign(rsa.privateKey, forge.md.sha256.create())
  return forge.pki.certificationRequestToPem(csr)
}

describe('CA refusals', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let caDir: string
  let caPem: string
  let otherCaDir: string
  let otherCaPem: string
  let sameNameCaDir: string
  let sameNameCaPem: string
  let node: TestNode
  let certPem: string

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir())
    caDir = join(dir, 'ca')
    otherCaDir = join(dir, 'other-ca')
    sameNameCaDir = join(dir, 'same-name-ca')
    ;({ certPem: caPem } = await initCa(caDir))
    ;({ certPem: otherCaPem } = await initCa(otherCaDir, { name: 'Other Operator' }))
    ;({ certPem: sameNameCaPem } = await initCa(sameNameCaDir)) // also 'BKG Operator', different key
    node = await makeNode('node-a')
    ;({ certPem } = await signNodeCsr(caDir, node.csrPem, { roles: ['member'] }))
  })

  afterAll(async () => { await cleanup() })

  describe('CSRs', () => {
    it('refuses a CSR without the proof of possession (made with plain forge)', async () => {
      const pem = forgeCsrWithoutProof(node.peerId)
      // openssl is fine with it: only the proof is missing
      const path = join(dir, 'no-proof.csr')
      await writeFile(path, pem)
      expect(openssl(['req', '-verify', '-noout', '-in', path]).status).toBe(0)
      await expectCaError(() => verifyNodeCsr(pem), 'csr_missing_proof')
      await expectCaError(() => signNodeCsr(caDir, pem), 'csr_missing_proof')
    })

    it('refuses a CSR that names no PeerId', async () => {
      await expectCaError(async () => await verifyNodeCsr(await handmadeCsr({})), 'csr_missing_proof')
    })

    it('refuses a proof made by a different libp2p key', async () => {
      const other = await generateKeyPair('Ed25519')
      const pem = await handmadeCsr({ peerId: node.peerId, proofKey: other })
      const err = await expectCaError(() => verifyNodeCsr(pem), 'csr_bad_proof')
      expect(err.message).toContain(node.peerId)
    })

    it('accepts the same hand-made CSR when the proof is by the right key', async () => {
      const pem = await handmadeCsr({ peerId: node.peerId, proofKey: node.key })
      expect((await verifyNodeCsr(pem)).peerId).toBe(node.peerId)
    })

    it('refuses a valid proof copied into a CSR for another RSA key', async () => {
      // the proof covers the RSA SubjectPublicKeyInfo: lifting it out of a genuine
      // CSR does not let anyone else get the PeerId certified for their own key
      const parsed = forge.pki.certificationRequestFromAsn1(forgeAsn1FromDer(pemToDer(node.csrPem)))
      const request = (parsed.attributes as Array<{ extensions?: Array<{ id: string, value: string }> }>)
        .find(a => a.extensions !== undefined)!
      const proof = request.extensions!.find(e => e.id === forgeOid(OID_PEER_KEY_PROOF))!
      const signature = Buffer.from(forge.asn1.fromDer(proof.value).value as string, 'binary')
      expect(signature.length).toBe(64)
      const pem = await handmadeCsr({ peerId: node.peerId, proofSignature: signature })
      await expectCaError(() => verifyNodeCsr(pem), 'csr_bad_proof')
    })

    it('refuses a tampered CSR (bad self-signature)', async () => {
      const der = pemToDer(node.csrPem)
      const at = der.indexOf(Buffer.from('node-a'))
      expect(at).toBeGreaterThan(0)
      const tampered = Buffer.from(der)
      tampered[at + 5] = 'b'.charCodeAt(0) // CN node-a → node-b
      await expectCaError(() => verifyNodeCsr(derToPem(tampered, 'CERTIFICATE REQUEST')), 'csr_bad_signature')
      const badSig = Buffer.from(der)
      badSig[badSig.length - 10] ^= 0x01
      await expectCaError(() => verifyNodeCsr(derToPem(badSig, 'CERTIFICATE REQUEST')), 'csr_bad_signature')
    })

    it('refuses malformed CSR PEM', async () => {
      await expectCaError(() => verifyNodeCsr('not a csr'), 'csr_malformed')
      await expectCaError(() => verifyNodeCsr(certPem), 'csr_malformed')
      await expectCaError(() => verifyNodeCsr(derToPem(Buffer.from([0x30, 0x03, 1, 2, 3]), 'CERTIFICATE REQUEST')), 'csr_malformed')
    })
  })

  describe('certificates', () => {
    it('refuses an expired certificate', async () => {
      const past = new Date(Date.now() - 400 * DAY)
      const { certPem: old } = await signNodeCsr(caDir, node.csrPem, { now: past, days: 30 })
      await expectCaError(() => verifyNodeCertificate(old, { caPem }), 'cert_expired')
      // still verifies at a time inside its window
      expect(verifyNodeCertificate(old, { caPem, now: new Date(past.getTime() + DAY) }).peerId).toBe(node.peerId)
      await expectCaError(() => verifyNodeCertificate(certPem, { caPem, now: new Date(Date.now() + 400 * DAY) }), 'cert_expired')
    })

    it('refuses a certificate that is not yet valid', async () => {
      const cert = parseNodeCertificate(certPem)
      await expectCaError(() => verifyNodeCertificate(certPem, { caPem, now: new Date(cert.notBefore.getTime() - 1000) }),
        'cert_not_yet_valid')
      // notBefore is backdated a few minutes for clock skew
      expect(cert.notBefore.getTime()).toBeLessThan(Date.now() - 60_000)
    })

    it('refuses a certificate from another CA', async () => {
      const { certPem: foreign } = await signNodeCsr(otherCaDir, node.csrPem)
      await expectCaError(() => verifyNodeCertificate(foreign, { caPem }), 'cert_untrusted')
      expect(verifyNodeCertificate(foreign, { caPem: otherCaPem }).peerId).toBe(node.peerId)
    })

    it('refuses a certificate from another CA with the same name (signature check)', async () => {
      const { certPem: foreign } = await signNodeCsr(sameNameCaDir, node.csrPem)
      expect(parseNodeCertificate(foreign).issuer).toBe(parseNodeCertificate(certPem).issuer)
      await expectCaError(() => verifyNodeCertificate(foreign, { caPem }), 'cert_untrusted')
      expect(verifyNodeCertificate(foreign, { caPem: sameNameCaPem }).peerId).toBe(node.peerId)
    })

    it('refuses a tampered certificate', async () => {
      const der = pemToDer(certPem)
      const at = der.indexOf(Buffer.from('member'))
      expect(at).toBeGreaterThan(0)
      const tampered = Buffer.from(der)
      tampered.write('admin,', at, 'latin1') // "member" → "admin,"
      const pem = derToPem(tampered, 'CERTIFICATE')
      expect(parseNodeCertificate(pem).roles).toEqual(['admin'])
      await expectCaError(() => verifyNodeCertificate(pem, { caPem }), 'cert_untrusted')
    })

    it('refuses a revoked certificate', async () => {
      const n = await makeNode('to-revoke')
      const { certPem: doomed, cert } = await signNodeCsr(caDir, n.csrPem)
      const before = verifyCrl((await issueCrl(caDir)).crlPem, caPem)
      expect(verifyNodeCertificate(doomed, { caPem, crl: before }).serial).toBe(cert.serial)
      await revokeCertificate(caDir, { certPem: doomed })
      const crl = verifyCrl((await issueCrl(caDir)).crlPem, caPem)
      expect(isNewerCrl(crl, before)).toBe(true)
      await expectCaError(() => verifyNodeCertificate(doomed, { caPem, crl }), 'cert_revoked')
      // other certificates are unaffected
      expect(verifyNodeCertificate(certPem, { caPem, crl }).peerId).toBe(node.peerId)
    })

    it('refuses a certificate presented by another peer', async () => {
      const stranger = await makeNode('stranger')
      const err = await expectCaError(() => verifyNodeCertificate(certPem, { caPem, expectedPeerId: stranger.peerId }),
        'cert_peer_mismatch')
      expect(err.message).toContain(stranger.peerId)
      expect(verifyNodeCertificate(certPem, { caPem, expectedPeerId: node.peerId }).name).toBe('node-a')
    })

    it('refuses the CA certificate presented as a node certificate', async () => {
      await expectCaError(() => verifyNodeCertificate(caPem, { caPem }), 'cert_is_ca')
      await expectCaError(() => parseNodeCertificate(caPem), 'cert_malformed')
    })

    it('refuses malformed certificates', async () => {
      await expectCaError(() => parseNodeCertificate(''), 'cert_malformed')
      await expectCaError(() => verifyNodeCertificate('garbage', { caPem }), 'cert_malformed')
      await expectCaError(() => verifyNodeCertificate(certPem, { caPem: 'garbage' }), 'cert_malformed')
      await expectCaError(() => verifyNodeCertificate(certPem, { caPem: certPem }), 'cert_malformed') // not a CA
    })
  })

  describe('the CA directory', () => {
    it('refuses to overwrite an existing CA', async () => {
      const err = await expectCaError(() => initCa(caDir), 'ca_exists')
      expect(err.message).toContain('ca.key')
      expect((await loadCa(caDir)).certPem).toBe(caPem)
    })

    it('replaces a CA with force', async () => {
      const { dir: d, cleanup: done } = await makeTempDir()
      try {
        const first = await initCa(d)
        const second = await initCa(d, { force: true })
        expect(second.certPem).not.toBe(first.certPem)
        expect((await loadCa(d)).certPem).toBe(second.certPem)
      } finally {
        await done()
      }
    })

    it('reports a missing CA', async () => {
      const { dir: d, cleanup: done } = await makeTempDir()
      try {
        const err = await expectCaError(() => loadCa(d), 'ca_missing')
        expect(err.message).toContain('bkg ca init')
        await expectCaError(() => signNodeCsr(d, node.csrPem), 'ca_missing')
        await expectCaError(() => issueCrl(d), 'ca_missing')
      } finally {
        await done()
      }
    })

    it('refuses unknown serials', async () => {
      await expectCaError(() => revokeCertificate(caDir, { serial: 'abcdef' }), 'serial_unknown')
      await expectCaError(() => revokeCertificate(caDir, { serial: 'not hex' }), 'serial_unknown')
      const { certPem: foreign } = await signNodeCsr(otherCaDir, node.csrPem)
      await expectCaError(() => revokeCertificate(caDir, { certPem: foreign }), 'serial_unknown')
    })

    it('refuses invalid roles and namespaces', async () => {
      const err = await expectCaError(() => parseRoles(['member', 'root']), 'invalid_role')
      expect(err.message).toContain('"root"')
      for (const role of ROLES) expect(err.message).toContain(role)
      await expectCaError(() => signNodeCsr(caDir, node.csrPem, { roles: ['superuser'] }), 'invalid_role')
      await expectCaError(() => parseNamespaces(['Lab']), 'invalid_namespace')
      await expectCaError(() => parseNamespaces(['-lab']), 'invalid_namespace')
      await expectCaError(() => parseNamespaces(['a'.repeat(64)]), 'invalid_namespace')
      await expectCaError(() => signNodeCsr(caDir, node.csrPem, { namespaces: ['bad/ns'] }), 'invalid_namespace')
      expect(parseRoles('relay, publisher,relay')).toEqual(['relay', 'publisher'])
      expect(parseNamespaces(['lab,prod', 'a.b_c-d'])).toEqual(['lab', 'prod', 'a.b_c-d'])
      expect(parseNamespaces('a'.repeat(63))).toEqual(['a'.repeat(63)])
    })
  })

  describe('CRLs', () => {
    it('refuses a CRL signed by another CA', async () => {
      const foreign = (await issueCrl(otherCaDir)).crlPem
      await expectCaError(() => verifyCrl(foreign, caPem), 'crl_untrusted')
      expect(verifyCrl(foreign, otherCaPem).issuer).toBe('Other Operator CA')
    })

    it('refuses a CRL from a same-named CA with another key', async () => {
      const foreign = (await issueCrl(sameNameCaDir)).crlPem
      await expectCaError(() => verifyCrl(foreign, caPem), 'crl_untrusted')
      // and one with the right issuer name and key identifier but a signature by another key
      const ca = await loadCa(sameNameCaDir)
      const mine = await loadCa(caDir)
      const forged = createCrl({ caCertPem: mine.certPem, caKeyPem: mine.keyPem, number: 99, revoked: [] })
      expect(verifyCrl(forged, caPem).number).toBe(99n)
      const der = pemToDer(forged)
      der[der.length - 5] ^= 0x80
      await expectCaError(() => verifyCrl(derToPem(der, 'X509 CRL'), caPem), 'crl_untrusted')
      expect(() => createCrl({ caCertPem: mine.certPem, caKeyPem: ca.keyPem, number: 1, revoked: [] })).toThrow(CaError)
    })

    it('orders CRLs by number', async () => {
      const { certPem: c, keyPem: k } = await loadCa(caDir)
      const older = parseCrl(createCrl({ caCertPem: c, caKeyPem: k, number: 5, revoked: [] }))
      const newer = parseCrl(createCrl({
        caCertPem: c,
        caKeyPem: k,
        number: 6n,
        revoked: [{ serial: '00FF', revokedAt: new Date('2026-01-01T00:00:00Z') }],
        thisUpdate: new Date('2020-01-01T00:00:00Z'),
        nextUpdate: new Date('2060-01-01T00:00:00Z') // GeneralizedTime
      }))
      expect(newer.revoked.get('ff')!.toISOString()).toBe('2026-01-01T00:00:00.000Z')
      expect(newer.nextUpdate!.toISOString()).toBe('2060-01-01T00:00:00.000Z')
      expect(isNewerCrl(newer, older)).toBe(true)
      expect(isNewerCrl(older, newer)).toBe(false)
      expect(isNewerCrl(older, older)).toBe(false)
      expect(isNewerCrl(older, null)).toBe(true)
      const big = parseCrl(createCrl({ caCertPem: c, caKeyPem: k, number: 2n ** 80n, revoked: [] }))
      expect(big.number).toBe(2n ** 80n)
      expect(isNewerCrl(big, newer)).toBe(true)
    })

    it('refuses malformed CRLs', async () => {
      await expectCaError(() => parseCrl(''), 'crl_malformed')
      await expectCaError(() => parseCrl(certPem), 'crl_malformed')
      await expectCaError(() => verifyCrl('-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n', caPem), 'crl_malformed')
    })
  })
})
