import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initCa, parseNodeCertificate, parseSubjectAltNames, signNodeCsr, verifyNodeCertificate } from '../../ca/index.ts'
import { expectCleanFailure, runBkg } from '../helpers/cli.ts'
import { expectCaError, makeNode, makeTempDir, openssl } from './helpers.ts'

describe('subject alternative names for the HTTPS API', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let caDir: string
  let caPem: string

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir('bkg-san-test-'))
    caDir = join(dir, 'ca')
    ;({ certPem: caPem } = await initCa(caDir, { name: 'San Operator' }))
  })

  afterAll(async () => { await cleanup() })

  it('parses DNS and IP names (case-insensitive type, de-duplicated, IPv6 canonical)', () => {
    expect(parseSubjectAltNames('DNS:node1.example,IP:127.0.0.1')).toEqual([
      { type: 'DNS', value: 'node1.example' }, { type: 'IP', value: '127.0.0.1' }
    ])
    expect(parseSubjectAltNames(['dns:Node1.Example', 'ip:::1', 'DNS:node1.example', 'IP:0:0::1'])).toEqual([
      { type: 'DNS', value: 'node1.example' }, { type: 'IP', value: '::1' }
    ])
    expect(parseSubjectAltNames('DNS:*.nodes.example, IP:2001:DB8::7')).toEqual([
      { type: 'DNS', value: '*.nodes.example' }, { type: 'IP', value: '2001:db8::7' }
    ])
    expect(parseSubjectAltNames('')).toEqual([])
  })

  it('refuses malformed names with a message naming the entry', () => {
    const bad = [
      'node1.example', 'URI:bkg:peer:x', 'DNS:', 'DNS:-bad.example', 'DNS:bad-.example', 'DNS:a..b', 'DNS:a_b.example',
      'DNS:a.*.example', 'DNS:' + 'a'.repeat(64) + '.example', 'DNS:127.0.0.1', 'IP:', 'IP:256.1.1.1', 'IP:01.2.3.4',
      'IP:fe80::1%eth0', 'IP:node1.example', 'EMAIL:a@b', 'DNS:node 1.example', 'DNS:nöde.example'
    ]
    for (const entry of bad) {
      let message = ''
      try {
        parseSubjectAltNames(entry)
      } catch (err) {
        expect((err as { code?: string }).code, entry).toBe('invalid_san')
        message = (err as Error).message
      }
      expect(message, entry).toContain(JSON.stringify(entry.trim()))
    }
    const many = Array.from({ length: 40 }, (_, i) => `DNS:n${i}.example`)
    expect(() => parseSubjectAltNames(many)).toThrow(/at most/)
  })

  it('signs the names in beside the PeerId URI; openssl verifies and shows them', async () => {
    const node = await makeNode('san-1')
    const { certPem, cert } = await signNodeCsr(caDir, node.csrPem, { sans: 'DNS:node1.example,IP:10.1.2.3,IP:2001:db8::7', loopbackSans: false })
    expect(cert.dnsNames).toEqual(['node1.example'])
    expect(cert.ipAddresses).toEqual(['10.1.2.3', '2001:db8::7'])
    const path = join(dir, 'san-1.crt')
    await writeFile(path, certPem)
    const verify = openssl(['verify', '-CAfile', join(caDir, 'ca.crt'), path])
    expect(verify.status, verify.stderr).toBe(0)
    const text = openssl(['x509', '-noout', '-text', '-in', path]).stdout
    expect(text).toContain(`URI:bkg:peer:${node.peerId}`)
    expect(text).toContain('DNS:node1.example')
    expect(text).toContain('IP Address:10.1.2.3')
    expect(text).toMatch(/IP Address:2001:DB8:0:0:0:0:0:7/i)
    expect(text).not.toContain('DNS:localhost')
    expect(verifyNodeCertificate(certPem, { caPem }).peerId).toBe(node.peerId)
  })

  it('names the loopback addresses by default, so local clients can verify the node', async () => {
    const node = await makeNode('san-2')
    const { certPem } = await signNodeCsr(caDir, node.csrPem, { sans: ['IP:127.0.0.1', 'DNS:node2.example'] })
    const cert = parseNodeCertificate(certPem)
    expect(cert.dnsNames).toEqual(['localhost', 'node2.example'])
    expect(cert.ipAddresses).toEqual(['127.0.0.1', '::1'])
    const plain = await signNodeCsr(caDir, (await makeNode('san-3')).csrPem)
    expect(plain.cert.dnsNames).toEqual(['localhost'])
    expect(plain.cert.ipAddresses).toEqual(['127.0.0.1', '::1'])
  })

  it('refuses a bad SAN before issuing anything', async () => {
    const node = await makeNode('san-4')
    await expectCaError(async () => await signNodeCsr(caDir, node.csrPem, { sans: 'DNS:bad_name' }), 'invalid_san')
  })

  it('`bkg ca sign --san` signs them in, and refuses bad syntax with one clear line', async () => {
    const node = await makeNode('san-5')
    const csr = join(dir, 'san-5.csr')
    await writeFile(csr, node.csrPem)
    const out = join(dir, 'san-5.crt')
    const ok = await runBkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', out, '--san', 'DNS:node1.example,IP:127.0.0.1'], dir)
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toContain('san=DNS:localhost,DNS:node1.example,IP:127.0.0.1,IP:::1')
    const text = openssl(['x509', '-noout', '-text', '-in', out]).stdout
    expect(text).toContain('DNS:node1.example')
    expect(text).toContain('IP Address:127.0.0.1')
    expect(openssl(['verify', '-CAfile', join(caDir, 'ca.crt'), out]).status).toBe(0)

    const bad = await runBkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', join(dir, 'bad.crt'), '--san', 'DNS:node1.example,IP:300.1.1.1'], dir)
    expectCleanFailure(bad, /subject alternative name "IP:300\.1\.1\.1"/, { singleLine: true })

    const bare = await runBkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', join(dir, 'bare.crt'), '--no-loopback-san'], dir)
    expect(bare.code, bare.stderr).toBe(0)
    expect(openssl(['x509', '-noout', '-text', '-in', join(dir, 'bare.crt')]).stdout).not.toContain('DNS:localhost')
  })
})
