import { spawnSync } from 'node:child_process'
import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { createNodeCsr, initCa, signNodeCsr, type Role } from '../../ca/index.ts'
import { requestNode, type NodeTls } from '../../node/cli/node-client.ts'
import { expectCleanFailure, runBkg } from '../helpers/cli.ts'
import { tempDir, TestMesh, type TestNode } from '../helpers/mesh.ts'

// Every address used here is loopback: the "beyond loopback" cases bind 0.0.0.0 and connect through 127.0.0.1.

function run (command: string, args: string[], input?: string): { status: number | null, stdout: string, stderr: string } {
  const res = spawnSync(command, args, { encoding: 'utf8', timeout: 20_000, input })
  if (res.error != null) throw res.error
  return { status: res.status, stdout: res.stdout, stderr: res.stderr }
}

const portOf = (url: string): string => new URL(url).port

/** A client identity signed by `caDir`: certificate and key PEM, also written to `dir`. */
async function clientIdentity (caDir: string, dir: string, name: string, roles: Role[]): Promise<{ certPem: string, keyPem: string, certPath: string, keyPath: string }> {
  const { csrPem, x509KeyPem } = await createNodeCsr({ privateKey: await generateKeyPair('Ed25519'), name })
  const { certPem } = await signNodeCsr(caDir, csrPem, { roles })
  const certPath = join(dir, `${name}.crt`)
  const keyPath = join(dir, `${name}.key`)
  await writeFile(certPath, certPem)
  await writeFile(keyPath, x509KeyPem, { mode: 0o600 })
  return { certPem, keyPem: x509KeyPem, certPath, keyPath }
}

describe('the API over HTTPS', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let node: TestNode
  let caPem: string
  let caPath: string

  beforeAll(async () => {
    tmp = await tempDir('bkg-api-tls-test-')
    mesh = await TestMesh.create(tmp.dir)
    caPath = join(mesh.caDir, 'ca.crt')
    caPem = await readFile(caPath, 'utf8')
    node = await mesh.addNode('tls-1', { roles: ['admin', 'member'], namespaces: ['lab'], sans: ['DNS:node1.example', 'IP:127.0.0.1'] })
    await node.start(['--api-tls', '--api-admin-mtls'])
  }, 60_000)

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('announces an https URL, in the started line and the data dir', async () => {
    expect(node.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    const written = JSON.parse(await readFile(node.paths.apiAddress, 'utf8')) as { url: string, peerId: string }
    expect(written.url).toBe(node.url)
    expect(written.peerId).toBe(node.peerId)
  })

  it('curl --cacert ca.crt reaches /api/v1/health', () => {
    const res = run('curl', ['-sS', '--fail', '--cacert', caPath, `${node.url}/api/v1/health`])
    expect(res.status, res.stderr).toBe(0)
    expect(JSON.parse(res.stdout)).toEqual({ status: 'ok', peerId: node.peerId })
    // and by a DNS name the operator signed in
    const byName = run('curl', ['-sS', '--fail', '--cacert', caPath, '--resolve', `node1.example:${portOf(node.url)}:127.0.0.1`, `https://node1.example:${portOf(node.url)}/api/v1/health`])
    expect(byName.status, byName.stderr).toBe(0)
    // a name it was not signed for is refused by curl's own check
    const wrongName = run('curl', ['-sS', '--cacert', caPath, '--resolve', `other.example:${portOf(node.url)}:127.0.0.1`, `https://other.example:${portOf(node.url)}/api/v1/health`])
    expect(wrongName.status).not.toBe(0)
  })

  it('openssl s_client verifies the chain to ca.crt and sees node.crt', async () => {
    const res = run('openssl', ['s_client', '-connect', `127.0.0.1:${portOf(node.url)}`, '-CAfile', caPath, '-verify_return_error', '-verify_ip', '127.0.0.1', '-showcerts'], 'Q\n')
    expect(res.status, res.stderr).toBe(0)
    expect(res.stdout).toMatch(/Verify return code: 0 \(ok\)/)
    const served = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(res.stdout)?.[0]
    expect(served?.replace(/\s+/g, '')).toBe((await readFile(node.paths.cert, 'utf8')).replace(/\s+/g, ''))
    const text = run('openssl', ['x509', '-noout', '-text', '-in', node.paths.cert]).stdout
    expect(text).toContain(`URI:bkg:peer:${node.peerId}`)
    expect(text).toContain('DNS:node1.example')
    expect(text).toContain('IP Address:127.0.0.1')
  })

  it('a plain HTTP request to the TLS port gets no answer', async () => {
    const plain = node.url.replace(/^https:/, 'http:')
    await expect(fetch(`${plain}/api/v1/health`, { signal: AbortSignal.timeout(5000) }).then(async (r) => await r.text())).rejects.toThrow()
    const res = run('curl', ['-sS', '--max-time', '5', `${plain}/api/v1/health`])
    expect(res.status).not.toBe(0)
  })

  it('the CLI finds the node through the data dir and trusts its ca.crt', async () => {
    const res = await runBkg(['model', 'ls', '--data', node.paths.dir], tmp.dir)
    expect(res.code, res.stderr).toBe(0)
    // and the test helper talks to it too
    const info = await node.api('GET', '/api/v1/node')
    expect(info.status).toBe(200)
    expect(info.body.peerId).toBe(node.peerId)
  })

  it('realtime WebSockets upgrade over the same TLS port (wss://)', async () => {
    const socket = new WebSocket(`${node.url.replace(/^https:/, 'wss:')}/realtime?token=${encodeURIComponent(node.token)}`, { ca: caPem })
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('open', () => resolve())
        socket.once('error', reject)
      })
      const reply = new Promise<any>((resolve) => socket.on('message', (data) => {
        const message = JSON.parse(String(data))
        if (message.type === 'reply') resolve(message)
      }))
      socket.send(JSON.stringify({ type: 'join', ref: 'r1', channel: 'events:lab' }))
      expect((await reply).ref).toBe('r1')
    } finally {
      socket.close()
    }
  })

  it('a client without ca.crt does not trust the node', async () => {
    await expect(requestNode(`${node.url}/api/v1/health`, { method: 'GET' })).rejects.toThrow(/certificate/i)
  })

  it('a client pinned to a PeerId accepts that node only, whatever the host name', async () => {
    const byPeerId = await requestNode(`${node.url.replace('127.0.0.1', 'localhost')}/api/v1/health`, { method: 'GET' }, { caPem, peerId: node.peerId })
    expect(byPeerId.status).toBe(200)
    const other = await mesh.addNode('tls-other', { roles: ['member'] })
    await expect(requestNode(`${node.url}/api/v1/health`, { method: 'GET' }, { caPem, peerId: other.peerId })).rejects.toThrow(/is not node/)
  })

  describe('admin routes with --api-admin-mtls', () => {
    const tokenBody = JSON.stringify({ namespace: 'lab', role: 'reader', ttl: '1h' })
    const createToken = async (tls: NodeTls): Promise<{ status: number, body: any }> => {
      const res = await requestNode(`${node.url}/api/v1/tokens`, {
        method: 'POST', headers: { authorization: `Bearer ${node.token}`, 'content-type': 'application/json' }, body: tokenBody
      }, tls)
      return { status: res.status, body: JSON.parse(res.text) }
    }

    it('are refused without a client certificate, even with the admin token', async () => {
      const res = await createToken({ caPem })
      expect(res.status).toBe(403)
      expect(res.body.error.code).toBe('client_cert_required')
      // routes for any token are unaffected
      const info = await requestNode(`${node.url}/api/v1/node`, { method: 'GET', headers: { authorization: `Bearer ${node.token}` } }, { caPem })
      expect(info.status).toBe(200)
    })

    it('are refused with a certificate without the admin role, or from another CA', async () => {
      const member = await clientIdentity(mesh.caDir, tmp.dir, 'member-client', ['member'])
      const refused = await createToken({ caPem, certPem: member.certPem, keyPem: member.keyPem })
      expect(refused.status).toBe(403)
      expect(refused.body.error.code).toBe('client_cert_refused')
      expect(refused.body.error.message).toMatch(/admin role/)

      const otherCa = join(tmp.dir, 'other-ca')
      await initCa(otherCa, { name: 'Other Operator', days: 30 })
      const foreign = await clientIdentity(otherCa, tmp.dir, 'foreign-admin', ['admin'])
      const untrusted = await createToken({ caPem, certPem: foreign.certPem, keyPem: foreign.keyPem })
      expect(untrusted.status).toBe(403)
      expect(untrusted.body.error.code).toBe('client_cert_refused')
    })

    it('are allowed with an admin-role certificate from the operator CA (curl and the CLI)', async () => {
      const admin = await clientIdentity(mesh.caDir, tmp.dir, 'operator-admin', ['admin'])
      const allowed = await createToken({ caPem, certPem: admin.certPem, keyPem: admin.keyPem })
      expect(allowed.status, JSON.stringify(allowed.body)).toBe(200)
      expect(typeof allowed.body.token).toBe('string')

      const curl = run('curl', ['-sS', '--fail-with-body', '--cacert', caPath, '--cert', admin.certPath, '--key', admin.keyPath,
        '-H', `authorization: Bearer ${node.token}`, '-H', 'content-type: application/json', '--data', tokenBody, `${node.url}/api/v1/tokens`])
      expect(curl.status, curl.stdout + curl.stderr).toBe(0)
      expect(JSON.parse(curl.stdout).token).toEqual(expect.any(String))
      // a token alone is still needed: the certificate adds to it, it does not replace it
      const noToken = run('curl', ['-sS', '--cacert', caPath, '--cert', admin.certPath, '--key', admin.keyPath,
        '-H', 'content-type: application/json', '--data', tokenBody, '-o', '/dev/null', '-w', '%{http_code}', `${node.url}/api/v1/tokens`])
      expect(noToken.stdout).toBe('401')

      // the CLI presents the data dir's own certificate, which carries the admin role here
      const cli = await runBkg(['token', 'create', '--data', node.paths.dir, '--namespace', 'lab', '--api', node.url, '--token', node.token], tmp.dir)
      expect(cli.code, cli.stderr).toBe(0)
    })
  })
})

describe('the API beyond loopback', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let node: TestNode

  beforeAll(async () => {
    tmp = await tempDir('bkg-api-wide-test-')
    mesh = await TestMesh.create(tmp.dir)
    node = await mesh.addNode('wide-1', { roles: ['member'], namespaces: ['lab'] })
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('binding 0.0.0.0 serves HTTPS by default; curl verifies it through 127.0.0.1', async () => {
    await node.start(['--api', '0.0.0.0:0'])
    expect(node.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    const res = run('curl', ['-sS', '--fail', '--cacert', join(mesh.caDir, 'ca.crt'), `${node.url}/api/v1/health`])
    expect(res.status, res.stderr).toBe(0)
    expect(JSON.parse(res.stdout).peerId).toBe(node.peerId)
    const cli = await runBkg(['model', 'ls', '--data', node.paths.dir], tmp.dir)
    expect(cli.code, cli.stderr).toBe(0)
    await node.stop()
  })

  it('refuses plain HTTP on 0.0.0.0 with one clear line', async () => {
    const res = await runBkg(['start', '--data', node.paths.dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '0.0.0.0:0', '--no-api-tls'], tmp.dir)
    expectCleanFailure(res, /refusing to serve the API on 0\.0\.0\.0:0 over plain HTTP.*--api-insecure/, { singleLine: true })
  })

  it('refuses TLS without the certificate\'s key, naming the file', async () => {
    const moved = `${node.paths.x509Key}.away`
    await rename(node.paths.x509Key, moved)
    try {
      const res = await runBkg(['start', '--data', node.paths.dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '0.0.0.0:0'], tmp.dir)
      expectCleanFailure(res, /node-x509\.key/, { singleLine: true })
    } finally {
      await rename(moved, node.paths.x509Key)
    }
  })

  it('serves plain HTTP on 0.0.0.0 only with --api-insecure', async () => {
    await node.start(['--api', '0.0.0.0:0', '--api-insecure'])
    expect(node.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    const res = await node.api('GET', '/api/v1/health')
    expect(res.status).toBe(200)
    await node.stop()
  })
})
