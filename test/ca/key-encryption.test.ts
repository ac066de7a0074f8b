import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CA_KEY_KDF, changeCaPassphrase, initCa, isCaKeyEncrypted, issueCrl, listCertificates, loadCa, revokeCertificate,
  signNodeCsr, verifyCrl, verifyNodeCertificate
} from '../../ca/index.ts'
import { expectCaError, makeNode, makeTempDir, openssl, type TestNode } from './helpers.ts'

const PASS = 'correct horse battery staple'

/** `openssl pkey` reading the key with exactly this passphrase (never a terminal prompt). */
function opensslReads (keyPath: string, passphrase: string): boolean {
  return openssl(['pkey', '-in', keyPath, '-passin', `pass:${passphrase}`, '-noout']).status === 0
}

describe('the CA key encrypted with a passphrase', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let caDir: string
  let caPem: string
  let node: TestNode

  beforeAll(async () => {
    ;({ dir, cleanup } = await makeTempDir())
    caDir = join(dir, 'ca')
    ;({ certPem: caPem } = await initCa(caDir, { name: 'Locked Operator', passphrase: PASS }))
    node = await makeNode('locked-node')
  })

  afterAll(async () => { await cleanup?.() })

  it('is stored as PKCS#8 EncryptedPrivateKeyInfo (PBES2, scrypt, AES-256-CBC), mode 0600', async () => {
    const keyPath = join(caDir, 'ca.key')
    const pem = await readFile(keyPath, 'utf8')
    expect(pem).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/)
    expect(pem).not.toContain('BEGIN PRIVATE KEY')
    expect((await stat(keyPath)).mode & 0o777).toBe(0o600)
    // the parameters docs/operations.md states
    const parsed = openssl(['asn1parse', '-in', keyPath])
    expect(parsed.status, parsed.stderr).toBe(0)
    const lines = parsed.stdout.split('\n')
    expect(lines.some(l => l.includes(':PBES2'))).toBe(true)
    expect(lines.some(l => /OBJECT\s+:(scrypt|id-scrypt|1\.3\.6\.1\.4\.1\.11591\.4\.11)$/.test(l))).toBe(true)
    expect(lines.some(l => l.includes(':aes-256-cbc'))).toBe(true)
    const integers = lines.filter(l => l.includes('INTEGER')).map(l => parseInt(l.split(':').pop() as string, 16))
    expect(integers).toEqual([CA_KEY_KDF.N, CA_KEY_KDF.r, CA_KEY_KDF.p, 32])
    expect(CA_KEY_KDF).toMatchObject({ N: 16384, r: 8, p: 5 })
    expect(await isCaKeyEncrypted(caDir)).toBe(true)
  })

  it('is read by openssl with the passphrase, and not without it or with a wrong one', () => {
    const keyPath = join(caDir, 'ca.key')
    expect(opensslReads(keyPath, PASS)).toBe(true)
    expect(opensslReads(keyPath, '')).toBe(false)
    expect(opensslReads(keyPath, 'wrong horse')).toBe(false)
    // and the key openssl decrypts is the one ca.crt certifies
    const fromKey = openssl(['pkey', '-in', keyPath, '-passin', `pass:${PASS}`, '-pubout']).stdout
    const fromCert = openssl(['x509', '-in', join(caDir, 'ca.crt'), '-noout', '-pubkey']).stdout
    expect(fromKey).toBe(fromCert)
  })

  it('signs, revokes and issues CRLs with the passphrase (given or asked for)', async () => {
    const asked: string[] = []
    const { certPem, cert } = await signNodeCsr(caDir, node.csrPem, {
      roles: ['member'],
      passphrase: async () => { asked.push('sign'); return PASS }
    })
    expect(asked).toEqual(['sign'])
    expect(verifyNodeCertificate(certPem, { caPem }).peerId).toBe(node.peerId)
    await revokeCertificate(caDir, { certPem }, { passphrase: PASS })
    const { crlPem } = await issueCrl(caDir, { passphrase: PASS })
    expect(verifyCrl(crlPem, caPem).revoked.has(cert.serial)).toBe(true)
    // listing the index needs no key
    expect((await listCertificates(caDir)).map(e => e.serial)).toContain(cert.serial)
    const loaded = await loadCa(caDir, { passphrase: PASS })
    expect(loaded.keyEncrypted).toBe(true)
    expect(loaded.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/)
  })

  it('refuses without a passphrase and with a wrong one, changing nothing', async () => {
    const indexBefore = await readFile(join(caDir, 'index.json'), 'utf8')
    let err = await expectCaError(() => signNodeCsr(caDir, node.csrPem), 'ca_passphrase_required')
    expect(err.message).toContain(join(caDir, 'ca.key'))
    err = await expectCaError(() => signNodeCsr(caDir, node.csrPem, { passphrase: 'wrong horse' }), 'ca_passphrase_wrong')
    expect(err.message).toMatch(/wrong passphrase/)
    await expectCaError(() => issueCrl(caDir), 'ca_passphrase_required')
    await expectCaError(() => issueCrl(caDir, { passphrase: '' }), 'ca_passphrase_wrong')
    await expectCaError(() => revokeCertificate(caDir, { serial: 'abcdef' }, { passphrase: 'nope' }), 'ca_passphrase_wrong')
    await expectCaError(() => loadCa(caDir), 'ca_passphrase_required')
    expect(await readFile(join(caDir, 'index.json'), 'utf8')).toBe(indexBefore)
  })

  it('refuses an empty passphrase for a new key', async () => {
    const { dir: d, cleanup: done } = await makeTempDir()
    try {
      await expect(initCa(d, { passphrase: '' })).rejects.toThrow(/passphrase/)
    } finally {
      await done()
    }
  })

  it('still loads an unencrypted key (tests, the devnet, CAs made before encryption)', async () => {
    const { dir: d, cleanup: done } = await makeTempDir()
    try {
      await initCa(d)
      expect(await readFile(join(d, 'ca.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/)
      expect(await isCaKeyEncrypted(d)).toBe(false)
      const asked: string[] = []
      const { certPem } = await signNodeCsr(d, node.csrPem, { passphrase: () => { asked.push('x'); return 'unused' } })
      expect(asked).toEqual([]) // a plain key never asks
      expect(certPem).toMatch(/BEGIN CERTIFICATE/)
      expect((await loadCa(d)).keyEncrypted).toBe(false)
    } finally {
      await done()
    }
  })

  it('encrypts an unencrypted key, and changes a passphrase', async () => {
    const { dir: d, cleanup: done } = await makeTempDir()
    try {
      const { certPem } = await initCa(d)
      await changeCaPassphrase(d, { newPassphrase: 'first passphrase' })
      expect(opensslReads(join(d, 'ca.key'), 'first passphrase')).toBe(true)
      await expectCaError(() => changeCaPassphrase(d, { passphrase: 'bad', newPassphrase: 'x2345678' }), 'ca_passphrase_wrong')
      await changeCaPassphrase(d, { passphrase: 'first passphrase', newPassphrase: 'second passphrase' })
      expect(opensslReads(join(d, 'ca.key'), 'first passphrase')).toBe(false)
      expect(opensslReads(join(d, 'ca.key'), 'second passphrase')).toBe(true)
      expect((await loadCa(d, { passphrase: 'second passphrase' })).certPem).toBe(certPem)
      expect((await stat(join(d, 'ca.key'))).mode & 0o777).toBe(0o600)
    } finally {
      await done()
    }
  })

  it('force replaces a CA but keeps the old files aside', async () => {
    const { dir: d, cleanup: done } = await makeTempDir()
    try {
      const first = await initCa(d, { passphrase: PASS })
      const oldKey = await readFile(join(d, 'ca.key'), 'utf8')
      await signNodeCsr(d, node.csrPem, { passphrase: PASS })
      await issueCrl(d, { passphrase: PASS })
      const second = await initCa(d, { force: true, passphrase: 'another passphrase' })
      expect(second.replaced).toMatch(/replaced-/)
      const aside = second.replaced as string
      expect((await readdir(aside)).sort()).toEqual(['ca.crt', 'ca.key', 'crlnumber', 'index.json'])
      expect(await readFile(join(aside, 'ca.key'), 'utf8')).toBe(oldKey)
      expect(await readFile(join(aside, 'ca.crt'), 'utf8')).toBe(first.certPem)
      expect((await stat(aside)).mode & 0o777).toBe(0o700)
      expect(await listCertificates(d)).toEqual([])
      expect((await loadCa(d, { passphrase: 'another passphrase' })).certPem).toBe(second.certPem)
      // a fresh CA has nothing to put aside
      expect(first.replaced).toBeNull()
    } finally {
      await done()
    }
  })

  it('reports a damaged key file as such, not as a wrong passphrase', async () => {
    const { dir: d, cleanup: done } = await makeTempDir()
    try {
      await initCa(d, { passphrase: PASS })
      await writeFile(join(d, 'ca.key'), '-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n')
      const err = await expectCaError(() => loadCa(d, { passphrase: PASS }), 'ca_missing')
      expect(err.message).toMatch(/unreadable/)
    } finally {
      await done()
    }
  })
})
