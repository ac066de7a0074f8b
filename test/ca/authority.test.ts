import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initCa, issueCrl, listCertificates, parseNodeCertificate, revokeCertificate, signNodeCsr } from '../../ca/index.ts'
import { makeNode, makeTempDir } from './helpers.ts'

describe('CA directory bookkeeping', () => {
  let dir: string
  let cleanup: () => Promise<void>

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir())
    await initCa(dir, { name: 'Books', days: 30 })
  })

  afterAll(async () => { await cleanup() })

  it('records concurrent signings without losing any', async () => {
    const nodes = await Promise.all([1, 2, 3, 4, 5].map(async i => await makeNode(`n${i}`)))
    const issued = await Promise.all(nodes.map(async n => await signNodeCsr(dir, n.csrPem, { roles: 'relay,member' })))
    const index = await listCertificates(dir)
    expect(index.map(e => e.serial).sort()).toEqual(issued.map(i => i.cert.serial).sort())
    expect(new Set(index.map(e => e.serial)).size).toBe(5)
    for (const entry of index) {
      expect(entry.roles).toEqual(['relay', 'member'])
      expect(entry.revokedAt).toBeNull()
      expect(entry.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    }
    // no temp files or lock left behind
    const files = (await readdir(dir)).sort()
    expect(files).toEqual(['ca.crt', 'ca.key', 'index.json'])
  })

  it('caps certificate validity at the CA expiry', async () => {
    const n = await makeNode('long-lived')
    const { cert } = await signNodeCsr(dir, n.csrPem, { days: 3650 })
    const notAfter = parseNodeCertificate(cert.pem).notAfter
    expect(notAfter.getTime()).toBeLessThanOrEqual(Date.now() + 31 * 86400_000)
  })

  it('numbers CRLs upwards and lists every revoked certificate', async () => {
    const index = await listCertificates(dir)
    const first = await issueCrl(dir)
    await revokeCertificate(dir, { serial: index[0].serial })
    await revokeCertificate(dir, { serial: index[1].serial })
    const second = await issueCrl(dir, { days: 1 })
    expect(second.number).toBe(first.number + 1n)
    expect((await readFile(join(dir, 'crlnumber'), 'utf8')).trim()).toBe(String(second.number))
    const revoked = (await listCertificates(dir)).filter(e => e.revokedAt !== null).map(e => e.serial)
    expect(revoked.sort()).toEqual([index[0].serial, index[1].serial].sort())
  })
})
