import { spawn } from 'node:child_process'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI_ENTRY } from '../../node/devnet/index.ts'
import { expectCleanFailure, pathExists, runBkg, type CliRun } from '../helpers/cli.ts'
import { tempDir } from '../helpers/mesh.ts'
import { openssl } from './helpers.ts'

const PASS = 'correct horse battery staple'

/** `bkg ARGS…` with stdin not a terminal, HOME in `dir`, and exactly the passphrase variables given. */
async function bkg (args: string[], dir: string, env: Record<string, string> = {}): Promise<CliRun> {
  return await runBkg(args, dir, env)
}

/**
 * Runs `bkg ARGS…` on a pseudo-terminal (util-linux `script`), typing each answer once the
 * output so far matches its prompt. Returns everything the terminal showed.
 */
async function bkgOnTerminal (args: string[], dir: string, answers: Array<[RegExp, string]>): Promise<{ code: number | null, screen: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: dir, BKG_NODE: process.execPath, BKG_ARGS: JSON.stringify([CLI_ENTRY, ...args]) }
  for (const name of ['BKG_CA_PASSPHRASE', 'BKG_CA_NEW_PASSPHRASE', 'BKG_DEBUG']) delete env[name]
  // the inner command re-splits the JSON argument list so no argument is ever shell-parsed
  const inner = '"$BKG_NODE" -e "require(\'node:child_process\').spawnSync(process.execPath, JSON.parse(process.env.BKG_ARGS), { stdio: \'inherit\' }).status === 0 || process.exit(1)"'
  const child = spawn('script', ['-q', '-e', '-c', inner, '/dev/null'], { cwd: dir, env, stdio: ['pipe', 'pipe', 'pipe'] })
  let screen = ''
  let next = 0
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    screen += chunk
    while (next < answers.length && answers[next][0].test(screen)) {
      child.stdin.write(answers[next][1] + '\r')
      next++
    }
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { screen += chunk })
  const guard = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)))
  clearTimeout(guard)
  return { code, screen }
}

function opensslReads (keyPath: string, passphrase: string): boolean {
  return openssl(['pkey', '-in', keyPath, '-passin', `pass:${passphrase}`, '-noout']).status === 0
}

describe('bkg ca: the CA key passphrase', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let dir: string
  let passFile: string
  let wrongFile: string
  let csr: string

  beforeAll(async () => {
    tmp = await tempDir('bkg-ca-passphrase-test-')
    dir = tmp.dir
    passFile = join(dir, 'pass.txt')
    wrongFile = join(dir, 'wrong.txt')
    await writeFile(passFile, `${PASS}\nthe second line is not part of it\n`, { mode: 0o600 })
    await writeFile(wrongFile, 'not the passphrase\n', { mode: 0o600 })
    const init = await bkg(['init', '--data', join(dir, 'n1'), '--name', 'n1'], dir)
    expect(init.code, init.stderr).toBe(0)
    csr = join(dir, 'n1', 'node.csr')
  })

  afterAll(async () => { await tmp?.remove() })

  it('ca init refuses to write an unencrypted key unless told so', async () => {
    const run = await bkg(['ca', 'init', '--out', join(dir, 'no-pass')], dir)
    expectCleanFailure(run, /needs a passphrase: give --passphrase-file FILE or set BKG_CA_PASSPHRASE .*--insecure-no-passphrase/, { exitCode: 2, singleLine: true })
    expect(await pathExists(join(dir, 'no-pass', 'ca.key'))).toBe(false)

    const both = await bkg(['ca', 'init', '--out', join(dir, 'both'), '--passphrase-file', passFile, '--insecure-no-passphrase'], dir)
    expectCleanFailure(both, /either --passphrase-file or --insecure-no-passphrase/, { exitCode: 2, singleLine: true })
    const short = await bkg(['ca', 'init', '--out', join(dir, 'short')], dir, { BKG_CA_PASSPHRASE: 'short' })
    expectCleanFailure(short, /at least 8 characters/, { exitCode: 2, singleLine: true })
    expect(await pathExists(join(dir, 'short', 'ca.key'))).toBe(false)
  })

  it('ca init --passphrase-file writes a key openssl reads only with the passphrase; sign, revoke, crl use it', async () => {
    const caDir = join(dir, 'ca-file')
    const init = await bkg(['ca', 'init', '--out', caDir, '--passphrase-file', passFile], dir)
    expect(init.code, init.stderr).toBe(0)
    expect(init.stderr).toBe('')
    const keyPath = join(caDir, 'ca.key')
    expect(await readFile(keyPath, 'utf8')).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/)
    expect(opensslReads(keyPath, PASS)).toBe(true)
    expect(opensslReads(keyPath, '')).toBe(false)

    const cert = join(dir, 'n1-file.crt')
    const [missing, wrong] = await Promise.all([
      bkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', cert], dir),
      bkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', cert, '--passphrase-file', wrongFile], dir)
    ])
    expectCleanFailure(missing, /the CA key in .* is encrypted: give --passphrase-file FILE or set BKG_CA_PASSPHRASE/, { exitCode: 2, singleLine: true })
    expectCleanFailure(wrong, /wrong passphrase for the CA key .*ca\.key/, { singleLine: true })
    expect(await pathExists(cert)).toBe(false)

    const sign = await bkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', cert, '--passphrase-file', passFile], dir)
    expect(sign.code, sign.stderr).toBe(0)
    expect(sign.stderr).toBe('')
    const revokeWrong = await bkg(['ca', 'revoke', '--ca', caDir, '--cert', cert], dir, { BKG_CA_PASSPHRASE: 'nope nope nope' })
    expectCleanFailure(revokeWrong, /wrong passphrase/, { singleLine: true })
    const revoke = await bkg(['ca', 'revoke', '--ca', caDir, '--cert', cert], dir, { BKG_CA_PASSPHRASE: PASS })
    expect(revoke.code, revoke.stderr).toBe(0)
    const crlPath = join(dir, 'file.crl')
    const crlMissing = await bkg(['ca', 'crl', '--ca', caDir, '--out', crlPath], dir)
    expectCleanFailure(crlMissing, /is encrypted: give --passphrase-file/, { exitCode: 2, singleLine: true })
    const crl = await bkg(['ca', 'crl', '--ca', caDir, '--out', crlPath, '--passphrase-file', passFile], dir)
    expect(crl.code, crl.stderr).toBe(0)
    const check = openssl(['crl', '-in', crlPath, '-CAfile', join(caDir, 'ca.crt'), '-noout'])
    expect(check.status, check.stderr).toBe(0)
  })

  it('BKG_CA_PASSPHRASE works for ca init too; ca passphrase changes it', async () => {
    const caDir = join(dir, 'ca-env')
    const init = await bkg(['ca', 'init', '--out', caDir], dir, { BKG_CA_PASSPHRASE: PASS })
    expect(init.code, init.stderr).toBe(0)
    expect(opensslReads(join(caDir, 'ca.key'), PASS)).toBe(true)
    const change = await bkg(['ca', 'passphrase', '--ca', caDir, '--passphrase-file', passFile], dir, { BKG_CA_NEW_PASSPHRASE: 'a brand new passphrase' })
    expect(change.code, change.stderr).toBe(0)
    expect(opensslReads(join(caDir, 'ca.key'), 'a brand new passphrase')).toBe(true)
    expect(opensslReads(join(caDir, 'ca.key'), PASS)).toBe(false)
    const wrongOld = await bkg(['ca', 'passphrase', '--ca', caDir, '--passphrase-file', passFile], dir, { BKG_CA_NEW_PASSPHRASE: 'another one again' })
    expectCleanFailure(wrongOld, /wrong passphrase/, { singleLine: true })
  })

  it('--insecure-no-passphrase makes a plain key; using it warns, and ca passphrase encrypts it', async () => {
    const caDir = join(dir, 'ca-plain')
    const init = await bkg(['ca', 'init', '--out', caDir, '--insecure-no-passphrase'], dir)
    expect(init.code, init.stderr).toBe(0)
    expect(init.stderr).toMatch(/NOT encrypted/)
    expect(await readFile(join(caDir, 'ca.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/)
    const sign = await bkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', join(dir, 'plain.crt')], dir)
    expect(sign.code, sign.stderr).toBe(0)
    expect(sign.stderr).toMatch(/^bkg: warning: the CA key .*ca\.key is not encrypted; encrypt it with: bkg ca passphrase --ca /)
    const encrypt = await bkg(['ca', 'passphrase', '--ca', caDir, '--new-passphrase-file', passFile], dir)
    expect(encrypt.code, encrypt.stderr).toBe(0)
    expect(opensslReads(join(caDir, 'ca.key'), PASS)).toBe(true)
    const after = await bkg(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', join(dir, 'plain2.crt'), '--passphrase-file', passFile], dir)
    expect(after.code, after.stderr).toBe(0)
    expect(after.stderr).toBe('')
  })

  it('ca init on an existing CA refuses and names --force; --force replaces it and keeps the old files', async () => {
    const caDir = join(dir, 'ca-force')
    expect((await bkg(['ca', 'init', '--out', caDir, '--passphrase-file', passFile], dir)).code).toBe(0)
    const oldCert = await readFile(join(caDir, 'ca.crt'), 'utf8')
    const again = await bkg(['ca', 'init', '--out', caDir, '--passphrase-file', passFile], dir)
    expectCleanFailure(again, /a CA already exists in .*--force replaces it/, { singleLine: true })
    expect(await readFile(join(caDir, 'ca.crt'), 'utf8')).toBe(oldCert)
    const help = await bkg(['ca', 'init', '--help'], dir)
    expect(help.stdout).toMatch(/--force/)
    const force = await bkg(['ca', 'init', '--out', caDir, '--passphrase-file', passFile, '--force'], dir)
    expect(force.code, force.stderr).toBe(0)
    expect(force.stderr).toMatch(/previous CA moved to .*replaced-/)
    expect(await readFile(join(caDir, 'ca.crt'), 'utf8')).not.toBe(oldCert)
    const aside = (await readdir(caDir)).filter(name => name.startsWith('replaced-'))
    expect(aside).toHaveLength(1)
    expect(await readFile(join(caDir, aside[0], 'ca.crt'), 'utf8')).toBe(oldCert)
  })

  it('asks on a terminal without echo: twice at ca init, once to sign', async () => {
    const caDir = join(dir, 'ca-tty')
    const secret = 'typed on a terminal'
    const init = await bkgOnTerminal(['ca', 'init', '--out', caDir], dir, [
      [/New passphrase for the CA key/, secret],
      [/The same passphrase again/, secret]
    ])
    expect(init.code, init.screen).toBe(0)
    expect(init.screen).toContain('CA created')
    expect(init.screen).not.toContain(secret)
    expect(opensslReads(join(caDir, 'ca.key'), secret)).toBe(true)

    const sign = await bkgOnTerminal(['ca', 'sign', '--ca', caDir, '--csr', csr, '--out', join(dir, 'tty.crt')], dir, [
      [/Passphrase for the CA key/, secret]
    ])
    expect(sign.code, sign.screen).toBe(0)
    expect(sign.screen).toContain('issued')
    expect(sign.screen).not.toContain(secret)

    const mismatch = await bkgOnTerminal(['ca', 'init', '--out', join(dir, 'ca-tty-2')], dir, [
      [/New passphrase for the CA key/, secret],
      [/The same passphrase again/, 'something else entirely']
    ])
    expect(mismatch.code, mismatch.screen).not.toBe(0)
    expect(mismatch.screen).toMatch(/bkg: the two passphrases differ; nothing was written/)
    expect(await pathExists(join(dir, 'ca-tty-2', 'ca.key'))).toBe(false)
  })
})
