import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  initCa, issueCrl, listCertificates, loadCa, parseCrl, parseNodeCertificate, revokeCertificate,
  signNodeCsr, verifyCrl, verifyNodeCertificate, verifyNodeCsr
} from '../../ca/index.ts'
import { makeNode, makeTempDir, openssl, type TestNode } from './helpers.ts'

describe('CA round trip (checked with openssl)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let caDir: string
  let caPem: string
  let node: TestNode
  let certPem: string
  let serial: string

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir())
    caDir = join(dir, 'ca')
    ;({ certPem: caPem } = await initCa(caDir, { name: 'Test Operator' }))
    node = await makeNode('node-1')
    await writeFile(join(dir, 'node.csr'), node.csrPem)
    const signed = await signNodeCsr(caDir, node.csrPem, { roles: ['publisher', 'relay'], namespaces: ['lab'] })
    certPem = signed.certPem
    serial = signed.cert.serial
    await writeFile(join(dir, 'node.crt'), certPem)
  })

  afterAll(async () => { await cleanup() })

  it('writes the CA files, the key with mode 0600', async () => {
    const keyInfo = await stat(join(caDir, 'ca.key'))
    expect(keyInfo.mode & 0o777).toBe(0o600)
    expect(await readFile(join(caDir, 'ca.crt'), 'utf8')).toBe(caPem)
    const ca = await loadCa(caDir)
    expect(ca.certPem).toBe(caPem)
    expect(ca.keyPem).toContain('PRIVATE KEY')
    const text = openssl(['x509', '-noout', '-text', '-in', join(caDir, 'ca.crt')]).stdout
    expect(text).toContain('CA:TRUE')
    expect(text).toContain('Certificate Sign, CRL Sign')
    expect(text).toMatch(/Subject: CN\s*=\s*Test Operator CA, O\s*=\s*Test Operator/)
  })

  it('verifies the CSR and openssl accepts its self-signature', async () => {
    const csr = await verifyNodeCsr(node.csrPem)
    expect(csr.peerId).toBe(node.peerId)
    expect(csr.name).toBe('node-1')
    expect(csr.publicKeyPem).toContain('BEGIN PUBLIC KEY')
    const res = openssl(['req', '-verify', '-noout', '-in', join(dir, 'node.csr')])
    expect(res.status, res.stderr).toBe(0)
    expect(res.stdout + res.stderr).toMatch(/verify OK/)
  })

  it('issues a certificate with the PeerId, name, roles and namespaces', async () => {
    const cert = parseNodeCertificate(certPem)
    expect(cert.peerId).toBe(node.peerId)
    expect(cert.name).toBe('node-1')
    expect(cert.roles).toEqual(['publisher', 'relay'])
    expect(cert.namespaces).toEqual(['lab'])
    expect(cert.issuer).toBe('Test Operator CA')
    expect(cert.serial).toBe(serial)
    expect(cert.serial).toMatch(/^[0-9a-f]+$/)
    expect(cert.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    expect(cert.notAfter.getTime() - cert.notBefore.getTime()).toBeGreaterThan(364 * 86400_000)
    const verified = verifyNodeCertificate(certPem, { caPem, expectedPeerId: node.peerId })
    expect(verified).toEqual(cert)
    const index = await listCertificates(caDir)
    expect(index).toHaveLength(1)
    expect(index[0]).toMatchObject({ serial, peerId: node.peerId, name: 'node-1', revokedAt: null })
  })

  it('openssl verify accepts the certificate and shows the URI SAN', () => {
    const res = openssl(['verify', '-CAfile', join(caDir, 'ca.crt'), join(dir, 'node.crt')])
    expect(res.status, res.stderr).toBe(0)
    expect(res.stdout).toContain('OK')
    const text = openssl(['x509', '-noout', '-text', '-in', join(dir, 'node.crt')]).stdout
    expect(text).toContain(`URI:bkg:peer:${node.peerId}`)
    expect(text).toContain('CA:FALSE')
    expect(text).toContain('TLS Web Server Authentication, TLS Web Client Authentication')
    expect(text).toContain('2.25.156249825839868478141005544995822954753.2')
    expect(text).toContain('publisher,relay')
    // openssl prints serials in uppercase hex
    const serialLine = openssl(['x509', '-noout', '-serial', '-in', join(dir, 'node.crt')]).stdout
    expect(serialLine.trim().toLowerCase()).toBe(`serial=${serial}`)
  })

  it('an empty CRL verifies with openssl', async () => {
    const { crlPem, number } = await issueCrl(caDir)
    expect(number).toBe(1n)
    expect(crlPem).toMatch(/^-----BEGIN X509 CRL-----\n/)
    const path = join(dir, 'empty-crl.pem')
    await writeFile(path, crlPem)
    const res = openssl(['crl', '-in', path, '-CAfile', join(caDir, 'ca.crt'), '-noout', '-text'])
    expect(res.status, res.stderr).toBe(0)
    expect(res.stderr).toContain('verify OK')
    expect(res.stdout).toContain('No Revoked Certificates')
    const crl = verifyCrl(crlPem, caPem)
    expect(crl.revoked.size).toBe(0)
    expect(crl.number).toBe(1n)
    expect(crl.issuer).toBe('Test Operator CA')
    expect(crl.nextUpdate!.getTime() - crl.thisUpdate.getTime()).toBe(7 * 86400_000)
    // openssl verify with that CRL still accepts the certificate
    const ok = openssl(['verify', '-crl_check', '-CRLfile', path, '-CAfile', join(caDir, 'ca.crt'), join(dir, 'node.crt')])
    expect(ok.status, ok.stdout + ok.stderr).toBe(0)
  })

  it('revokes, and the next CRL lists the serial for openssl too', async () => {
    const entry = await revokeCertificate(caDir, { serial: serial.toUpperCase() })
    expect(entry.serial).toBe(serial)
    expect(entry.revokedAt).not.toBeNull()
    const again = await revokeCertificate(caDir, { certPem })
    expect(again.revokedAt).toBe(entry.revokedAt)

    const { crlPem, number } = await issueCrl(caDir)
    expect(number).toBe(2n)
    expect((await readFile(join(caDir, 'crlnumber'), 'utf8')).trim()).toBe('2')
    const path = join(dir, 'crl.pem')
    await writeFile(path, crlPem)

    const res = openssl(['crl', '-in', path, '-CAfile', join(caDir, 'ca.crt'), '-noout', '-text'])
    expect(res.status, res.stderr).toBe(0)
    expect(res.stderr).toContain('verify OK')
    expect(res.stdout.toLowerCase()).toContain(`serial number: ${serial}`)
    expect(res.stdout).toMatch(/CRL Number:\s*\n\s*2/)

    const rejected = openssl(['verify', '-crl_check', '-CRLfile', path, '-CAfile', join(caDir, 'ca.crt'), join(dir, 'node.crt')])
    expect(rejected.status).not.toBe(0)
    expect(rejected.stdout + rejected.stderr).toContain('certificate revoked')

    const crl = verifyCrl(crlPem, caPem)
    expect(crl.number).toBe(2n)
    expect([...crl.revoked.keys()]).toEqual([serial])
    expect(crl.revoked.get(serial)!.toISOString()).toBe(new Date(Math.floor(Date.parse(entry.revokedAt!) / 1000) * 1000).toISOString())
    expect(parseCrl(crlPem)).toEqual(crl)
  })

  it('keeps working for non-ASCII operator names', async () => {
    const { dir: other, cleanup: done } = await makeTempDir()
    try {
      const { certPem: otherCa } = await initCa(other, { name: 'Opérateur Ünï' })
      const n = await makeNode('nœud-é')
      const { certPem: c } = await signNodeCsr(other, n.csrPem)
      const cert = verifyNodeCertificate(c, { caPem: otherCa })
      expect(cert.issuer).toBe('Opérateur Ünï CA')
      expect(cert.name).toBe('nœud-é')
      expect(cert.roles).toEqual(['member'])
      expect(cert.namespaces).toEqual([])
      await writeFile(join(other, 'node.crt'), c)
      const res = openssl(['verify', '-CAfile', join(other, 'ca.crt'), join(other, 'node.crt')])
      expect(res.status, res.stderr).toBe(0)
      const { crlPem } = await issueCrl(other)
      expect(verifyCrl(crlPem, otherCa).issuer).toBe('Opérateur Ünï CA')
      await writeFile(join(other, 'crl.pem'), crlPem)
      const crlRes = openssl(['crl', '-in', join(other, 'crl.pem'), '-CAfile', join(other, 'ca.crt'), '-noout'])
      expect(crlRes.stderr).toContain('verify OK')
    } finally {
      await done()
    }
  })
})
