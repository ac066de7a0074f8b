import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { issueCrl, revokeCertificate, signNodeCsr } from '../../ca/index.ts'
import { openPackage } from '../../node/model-packages/index.ts'
import { VERSION } from '../../node/version.ts'
import { expectCleanFailure as expectFailure, pathExists as exists, runBkg as bkg, type CliRun } from '../helpers/cli.ts'
import { tempDir } from '../helpers/mesh.ts'
import { makeCa, makeIdentity, type Identity } from './helpers.ts'

/** Model commands fail with exactly one `bkg: …` line and nothing on stdout. */
function expectCleanFailure (run: CliRun, message: RegExp): void {
  expectFailure(run, message, { singleLine: true })
}

describe('bkg model pack | verify', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let dir: string
  let publisher: Identity
  let member: Identity
  let foreignCa: string
  let modelDir: string

  beforeAll(async () => {
    tmp = await tempDir('bkg-model-cli-test-')
    dir = tmp.dir
    const ca = await makeCa(dir, 'CLI Model Operator')
    const other = await makeCa(dir, 'Foreign Operator')
    foreignCa = join(other.caDir, 'ca.crt')
    ;[publisher, member] = await Promise.all([
      makeIdentity(ca.caDir, dir, 'pub', ['publisher', 'member']),
      makeIdentity(ca.caDir, dir, 'member', ['member'])
    ])
    modelDir = join(dir, 'model')
    await mkdir(join(modelDir, 'tokenizer'), { recursive: true })
    await writeFile(join(modelDir, 'weights.bin'), Buffer.alloc(200_000, 0x5a))
    await writeFile(join(modelDir, 'tokenizer', 'vocab.txt'), 'a\nb\nc\n')
    await writeFile(join(dir, 'not-a-package.bkg'), 'hello, I am a text file and no package\n')
  })

  afterAll(async () => {
    await tmp?.remove()
  })

  it('packs, then verifies, prints the manifest as JSON, and keeps the root --version', async () => {
    const pack = await bkg(['model', 'pack', modelDir, '--name', 'tiny', '--version', '1.0.0', '--licence', 'MIT', '--data', publisher.paths.dir, '--out', 'tiny.bkg'], dir)
    expect(pack.code, pack.stderr).toBe(0)
    expect(pack.stdout).toBe('tiny@1.0.0 → tiny.bkg\n')
    expect(pack.stderr).toContain(`signed by pub (${publisher.cert.peerId}); 2 file(s), 200006 bytes`)
    const opened = await openPackage(join(dir, 'tiny.bkg'))
    expect(opened.envelope.manifest).toMatchObject({ name: 'tiny', version: '1.0.0', licence: 'MIT', architecture: 'unspecified', chunkSize: 1024 * 1024 })

    const [verify, json, rootVersion] = await Promise.all([
      bkg(['model', 'verify', 'tiny.bkg', '--data', publisher.paths.dir], dir),
      bkg(['model', 'verify', join(dir, 'tiny.bkg'), '--data', member.paths.dir, '--json'], dir),
      bkg(['--version'], dir)
    ])
    expect(verify.code, verify.stderr).toBe(0)
    expect(verify.stdout).toMatch(/^verified tiny@1\.0\.0: 2 file\(s\), 200006 bytes, signed by pub \(12D3KooW\w+\)\n$/)
    expect(verify.stdout).toContain(publisher.cert.peerId)
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual(opened.envelope.manifest)
    expect(rootVersion.code, rootVersion.stderr).toBe(0)
    expect(rootVersion.stdout.trim()).toBe(VERSION)
    expect(VERSION).toMatch(/^\d+\.\d+\.\d+/)
  })

  it('fails cleanly, with one line and no stack trace, on every refusal', async () => {
    const good = await readFile(join(dir, 'tiny.bkg'))
    const tampered = Buffer.from(good)
    tampered[tampered.length - 1000] ^= 0xff // inside weights.bin, the last file
    await writeFile(join(dir, 'tampered.bkg'), tampered)

    const [memberPack, tamperedVerify, foreignVerify, notPackage, badVersion, badName, missing] = await Promise.all([
      bkg(['model', 'pack', modelDir, '--name', 'tiny', '--version', '1.0.0', '--data', member.paths.dir, '--out', 'member.bkg'], dir),
      bkg(['model', 'verify', 'tampered.bkg', '--data', publisher.paths.dir], dir),
      bkg(['model', 'verify', 'tiny.bkg', '--data', publisher.paths.dir, '--ca', foreignCa], dir),
      bkg(['model', 'verify', 'not-a-package.bkg', '--data', publisher.paths.dir], dir),
      bkg(['model', 'pack', modelDir, '--name', 'tiny', '--version', '1', '--data', publisher.paths.dir, '--out', 'v1.bkg'], dir),
      bkg(['model', 'pack', modelDir, '--name', 'Tiny', '--version', '1.0.0', '--data', publisher.paths.dir, '--out', 'upper.bkg'], dir),
      bkg(['model', 'pack', join(dir, 'no-such-model'), '--name', 'tiny', '--version', '1.0.0', '--data', publisher.paths.dir, '--out', 'missing.bkg'], dir)
    ])
    expectCleanFailure(memberPack, /lacks the publisher role/)
    expectCleanFailure(tamperedVerify, /weights\.bin: content does not match the signed manifest/)
    expectCleanFailure(foreignVerify, /publisher certificate refused: .*not issued by the operator CA/)
    expectCleanFailure(notPackage, /not a \.bkg package: wrong magic bytes/)
    expectCleanFailure(badVersion, /version: a semantic version/)
    expectCleanFailure(badName, /name: lowercase letters/)
    expectCleanFailure(missing, /no-such-model: no such file or directory/)
    for (const out of ['member.bkg', 'v1.bkg', 'upper.bkg', 'missing.bkg']) expect(await exists(join(dir, out)), out).toBe(false)
  })

  it('verify without a CA to trust fails cleanly', async () => {
    const run = await bkg(['model', 'verify', 'tiny.bkg', '--data', join(dir, 'no-such-node')], dir)
    expectCleanFailure(run, /cannot read the CA certificate/)
  })

  // KNOWN PRODUCT BUG: node/model-packages/index.ts writePackage (line 62) creates the temp file's write
  // stream and attaches no 'error' listener until it awaits 'drain'/'finish'; when the output directory does
  // not exist, the stream's ENOENT surfaces as an uncaught 'error' event and the CLI dies with a stack trace.
  it('pack into a directory that does not exist fails cleanly', async () => {
    const run = await bkg(['model', 'pack', modelDir, '--name', 'tiny', '--version', '1.0.0', '--data', publisher.paths.dir, '--out', join(dir, 'no', 'such', 'dir', 'x.bkg')], dir)
    expectCleanFailure(run, /cannot write .*x\.bkg: its directory does not exist/)
  })

  it('pack refuses an expired or revoked publisher certificate with the codes nodes refuse it with', async () => {
    const ca = await makeCa(dir, 'Pack Refusal Operator')
    const [expired, revoked] = await Promise.all([
      makeIdentity(ca.caDir, dir, 'expired-pub', ['publisher']),
      makeIdentity(ca.caDir, dir, 'revoked-pub', ['publisher'])
    ])
    // re-sign the expired one's CSR as of two days ago, valid for one day
    const csr = await readFile(expired.paths.csr, 'utf8')
    const old = await signNodeCsr(ca.caDir, csr, { roles: ['publisher'], namespaces: ['default'], days: 1, now: new Date(Date.now() - 2 * 86_400_000) })
    await writeFile(expired.paths.cert, old.certPem)
    // the revoked one's data dir holds a CRL listing it, as a node writes it when it adopts one
    await revokeCertificate(ca.caDir, { certPem: revoked.certPem })
    await writeFile(revoked.paths.crl, (await issueCrl(ca.caDir)).crlPem)

    const [expiredPack, revokedPack] = await Promise.all([
      bkg(['model', 'pack', modelDir, '--name', 'tiny', '--version', '1.0.0', '--data', expired.paths.dir, '--out', 'expired.bkg'], dir),
      bkg(['model', 'pack', modelDir, '--name', 'tiny', '--version', '1.0.0', '--data', revoked.paths.dir, '--out', 'revoked.bkg'], dir)
    ])
    expectCleanFailure(expiredPack, /publisher_expired.*expired at/)
    expectCleanFailure(revokedPack, new RegExp(`publisher_revoked.*${revoked.cert.serial}`))
    for (const out of ['expired.bkg', 'revoked.bkg']) expect(await exists(join(dir, out)), out).toBe(false)

    // a CRL asked for by name must be there: no silent signing without it
    const withoutCrl = await bkg(['model', 'pack', modelDir, '--name', 'tiny', '--version', '1.0.0', '--data', revoked.paths.dir, '--crl', join(dir, 'no-such.crl'), '--out', 'x.bkg'], dir)
    expectCleanFailure(withoutCrl, /cannot read CRL/)
  })
})
