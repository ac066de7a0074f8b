import { spawn, spawnSync } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { verifyToken } from '../../node/auth/index.ts'
import { CLI_ENTRY } from '../../node/devnet/index.ts'
import { expectCleanFailure, pathExists as exists, runBkg as bkg } from '../helpers/cli.ts'
import { openssl } from '../ca/helpers.ts'
import { tempDir } from '../helpers/mesh.ts'

function lastLine (text: string): string {
  const lines = text.trim().split('\n')
  return lines[lines.length - 1].trim()
}

describe('bkg CLI', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let dir: string
  let caDir: string
  let nodeDir: string
  let peerId: string
  let serial: string

  beforeAll(async () => {
    tmp = await tempDir('bkg-cli-test-')
    dir = tmp.dir
    caDir = join(dir, 'ca')
    nodeDir = join(dir, 'n1')
  })

  afterAll(async () => {
    await tmp?.remove()
  })

  it('prints help for bkg, bkg ca init and bkg start', async () => {
    const [top, caInit, start] = await Promise.all([
      bkg(['--help'], dir),
      bkg(['ca', 'init', '--help'], dir),
      bkg(['start', '--help'], dir)
    ])
    expect(top.code, top.stderr).toBe(0)
    expect(top.stdout).toMatch(/Usage: bkg/)
    for (const command of ['ca', 'init', 'start', 'token', 'crl', 'devnet']) expect(top.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'))
    expect(caInit.code, caInit.stderr).toBe(0)
    expect(caInit.stdout).toMatch(/Usage: bkg ca init/)
    expect(caInit.stdout).toMatch(/--out <dir>/)
    expect(start.code, start.stderr).toBe(0)
    for (const flag of ['--data', '--listen', '--api', '--bootstrap', '--log-level']) expect(start.stdout).toContain(flag)
  })

  it('runs the operator flow that openssl accepts', async () => {
    // the CA key is encrypted by default; a passphrase file is the scriptable way to give it
    const passFile = join(dir, 'ca-passphrase')
    await writeFile(passFile, 'cli test passphrase\n', { mode: 0o600 })
    const caInit = await bkg(['ca', 'init', '--out', caDir, '--name', 'CLI Test Operator', '--passphrase-file', passFile], dir)
    expect(caInit.code, caInit.stderr).toBe(0)
    expect(await exists(join(caDir, 'ca.crt'))).toBe(true)
    expect(openssl(['pkey', '-in', join(caDir, 'ca.key'), '-passin', 'pass:cli test passphrase', '-noout']).status).toBe(0)

    const init = await bkg(['init', '--data', nodeDir, '--name', 'n1'], dir)
    expect(init.code, init.stderr).toBe(0)
    peerId = lastLine(init.stdout)
    expect(peerId).toMatch(/^12D3KooW[1-9A-HJ-NP-Za-km-z]+$/)
    expect(await exists(join(nodeDir, 'node.csr'))).toBe(true)

    const certPath = join(nodeDir, 'node.crt')
    const sign = await bkg(['ca', 'sign', '--ca', caDir, '--csr', join(nodeDir, 'node.csr'), '--out', certPath, '--roles', 'publisher,relay', '--namespaces', 'lab', '--passphrase-file', passFile], dir)
    expect(sign.code, sign.stderr).toBe(0)
    expect(sign.stdout).toContain(peerId)
    expect(sign.stdout).toContain('roles=publisher,relay')
    expect(sign.stdout).toContain('namespaces=lab')
    serial = /serial=([0-9a-f]+)/.exec(sign.stdout)?.[1] ?? ''
    expect(serial).not.toBe('')

    const verify = openssl(['verify', '-CAfile', join(caDir, 'ca.crt'), certPath])
    expect(verify.status, verify.stderr).toBe(0)
    expect(verify.stdout).toMatch(/: OK$/m)
    const san = openssl(['x509', '-in', certPath, '-noout', '-ext', 'subjectAltName'])
    expect(san.status, san.stderr).toBe(0)
    expect(san.stdout).toContain(`URI:bkg:peer:${peerId}`)

    const revoke = await bkg(['ca', 'revoke', '--ca', caDir, '--cert', certPath, '--passphrase-file', passFile], dir)
    expect(revoke.code, revoke.stderr).toBe(0)
    expect(revoke.stdout).toContain(serial)

    const crlPath = join(dir, 'crl.pem')
    const crl = await bkg(['ca', 'crl', '--ca', caDir, '--out', crlPath, '--passphrase-file', passFile], dir)
    expect(crl.code, crl.stderr).toBe(0)
    const crlCheck = openssl(['crl', '-in', crlPath, '-CAfile', join(caDir, 'ca.crt'), '-noout'])
    expect(crlCheck.status, crlCheck.stderr).toBe(0)
    expect(crlCheck.stderr + crlCheck.stdout).toMatch(/verify OK/)
    const crlText = openssl(['crl', '-in', crlPath, '-noout', '-text'])
    expect(crlText.stdout.toLowerCase()).toContain(serial.toLowerCase())
  })

  it('bkg token create prints a token that verifies against the data dir', async () => {
    const run = await bkg(['token', 'create', '--data', nodeDir, '--namespace', 'lab', '--role', 'writer', '--ttl', '1h'], dir)
    expect(run.code, run.stderr).toBe(0)
    const token = lastLine(run.stdout)
    const keys = {
      adminToken: (await readFile(join(nodeDir, 'api-token'), 'utf8')).trim(),
      secret: (await readFile(join(nodeDir, 'token-secret'), 'utf8')).trim()
    }
    const principal = verifyToken(token, keys)
    expect(principal).toMatchObject({ kind: 'namespace', namespace: 'lab', role: 'writer' })
    const lifetime = principal!.expiresAt! - Date.now()
    expect(lifetime).toBeGreaterThan(50 * 60_000)
    expect(lifetime).toBeLessThanOrEqual(3_600_000)
    expect(verifyToken(token, { ...keys, secret: 'other' })).toBeNull()
  })

  it('refuses bad CA input with a clear message', async () => {
    const keyBefore = await readFile(join(caDir, 'ca.key'), 'utf8')
    const [missingCsr, wizard, again, both, neither, missingOption] = await Promise.all([
      bkg(['ca', 'sign', '--ca', caDir, '--csr', join(dir, 'missing.csr'), '--out', join(dir, 'x.crt')], dir),
      bkg(['ca', 'sign', '--ca', caDir, '--csr', join(nodeDir, 'node.csr'), '--out', join(dir, 'y.crt'), '--roles', 'wizard'], dir),
      bkg(['ca', 'init', '--out', caDir], dir),
      bkg(['ca', 'revoke', '--ca', caDir, '--cert', join(nodeDir, 'node.crt'), '--serial', '01'], dir),
      bkg(['ca', 'revoke', '--ca', caDir], dir),
      bkg(['ca', 'sign', '--ca', caDir, '--out', join(dir, 'z.crt')], dir)
    ])
    expectCleanFailure(missingCsr, /cannot read CSR .*missing\.csr: no such file/)
    expectCleanFailure(wizard, /invalid role "wizard"/)
    expect(await exists(join(dir, 'y.crt'))).toBe(false)
    expectCleanFailure(again, /already exists/)
    expect(await readFile(join(caDir, 'ca.key'), 'utf8')).toBe(keyBefore)
    expectCleanFailure(both, /exactly one of --cert FILE or --serial HEX/, { exitCode: 2 })
    expectCleanFailure(neither, /exactly one of --cert FILE or --serial HEX/, { exitCode: 2 })
    // commander's own usage errors
    expect(missingOption.code).not.toBe(0)
    expect(missingOption.stderr).toMatch(/required option '--csr <file>' not specified/)
    expect(missingOption.stderr).not.toMatch(/^\s+at /m)
  })

  it('refuses bad node input with a clear message', async () => {
    const empty = join(dir, 'empty')
    const [noIdentity, badListen, badNamespace, missingCrl, badName, badTtl, notANode, hugeTtl] = await Promise.all([
      bkg(['start', '--data', empty, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', '--log-level', 'silent'], dir),
      bkg(['start', '--data', nodeDir, '--listen', 'notamultiaddr', '--api', '127.0.0.1:0'], dir),
      bkg(['token', 'create', '--data', nodeDir, '--namespace', 'BAD!'], dir),
      bkg(['crl', 'publish', join(dir, 'missing.pem'), '--data', nodeDir], dir),
      bkg(['init', '--data', join(dir, 'bad-name'), '--name', 'bad name!'], dir),
      bkg(['token', 'create', '--data', nodeDir, '--namespace', 'lab', '--ttl', 'soon'], dir),
      bkg(['token', 'create', '--data', join(dir, 'not-a-node'), '--namespace', 'lab'], dir),
      bkg(['token', 'create', '--data', nodeDir, '--namespace', 'lab', '--ttl', '100000000d'], dir)
    ])
    expectCleanFailure(noIdentity, /no node identity in .*empty.*bkg init/)
    expectCleanFailure(badListen, /not a valid multiaddr[\s\S]*listen\[0\]/)
    expectCleanFailure(badNamespace, /cannot issue token/)
    expect(badNamespace.stdout).not.toMatch(/bkgt1\./)
    expectCleanFailure(missingCrl, /cannot read CRL .*missing\.pem: no such file/)
    expectCleanFailure(badName, /node name "bad name!" is not valid/, { exitCode: 2 })
    expect(await exists(join(dir, 'bad-name', 'node.key'))).toBe(false)
    expectCleanFailure(badTtl, /"soon" is not a duration/)
    expectCleanFailure(notANode, /not an initialised node data dir .*bkg init/)
    expect(await exists(join(dir, 'not-a-node'))).toBe(false)
    expectCleanFailure(hugeTtl, /at most 3650d/)
  })

  it('bkg start refuses a bad environment value before starting', async () => {
    const child = spawnSync(process.execPath, [CLI_ENTRY, 'start', '--data', nodeDir, '--api', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0'], {
      encoding: 'utf8',
      env: { ...process.env, HOME: dir, BKG_UPNP: 'maybe' },
      timeout: 45_000
    })
    expectCleanFailure({ code: child.status, stdout: child.stdout, stderr: child.stderr }, /BKG_UPNP=maybe/)
  })
})

describe('bkg devnet', () => {
  it('starts a 2-node mesh, and SIGINT stops it and removes its temp dir', async () => {
    const child = spawn(process.execPath, [CLI_ENTRY, 'devnet', '--nodes', '2', '--base-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    const stdout: string[] = []
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    try {
      const ready = await new Promise<boolean>((resolve) => {
        const guard = setTimeout(() => resolve(false), 60_000)
        createInterface({ input: child.stdout }).on('line', (line) => {
          stdout.push(line)
          if (line.includes('mesh ready')) {
            clearTimeout(guard)
            resolve(true)
          }
        })
        void exited.then(() => { clearTimeout(guard); resolve(false) })
      })
      expect(ready, `stdout:\n${stdout.join('\n')}\nstderr:\n${stderr}`).toBe(true)
      const devnetDir = /^BKG devnet: 2 nodes in (.+) \(removed on exit\)$/m.exec(stdout.join('\n'))?.[1]
      expect(devnetDir, stdout.join('\n')).toBeDefined()
      expect(await exists(devnetDir!)).toBe(true)
      const apis = stdout.flatMap((line) => /^\s+node-\d+\s+(http:\/\/\S+)\s+12D3KooW\S+$/.exec(line)?.[1] ?? [])
      expect(apis).toHaveLength(2)
      for (const api of apis) expect((await fetch(`${api}/api/v1/health`)).status).toBe(200)

      child.kill('SIGINT')
      const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000))])
      expect(code, stderr).toBe(0)
      expect(await exists(devnetDir!)).toBe(false)
      // the node processes are gone too
      for (const api of apis) await expect(fetch(`${api}/api/v1/health`)).rejects.toThrow()
    } finally {
      if (child.exitCode == null && child.signalCode == null) {
        child.kill('SIGTERM')
        await exited
      }
    }
  })
})
