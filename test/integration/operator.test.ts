import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer as createHttpServer } from 'node:http'
import { createServer, type Server } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { dirname, isAbsolute, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { issueCrl, revokeCertificate } from '../../ca/index.ts'
import { CLI_ENTRY, spawnNode, type NodeProcess } from '../../node/devnet/index.ts'
import { EXIT } from '../../node/cli/errors.ts'
import { cliEnv, expectCleanFailure, pathExists, runBkg, type CliRun } from '../helpers/cli.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor } from '../helpers/mesh.ts'

// What a new operator meets, README and docs/operations.md in hand (issue 10, points 8-11).

const README = new URL('../../README.md', import.meta.url)
// a CA passphrase for `bkg ca init` wherever it asks for one; ignored where it does not
const PASSPHRASE = 'operator test passphrase'

function env (dir: string): NodeJS.ProcessEnv {
  return { ...cliEnv(dir), BKG_CA_PASSPHRASE: PASSPHRASE }
}

async function bkg (args: string[], dir: string): Promise<CliRun> {
  return await runBkg(args, dir, { BKG_CA_PASSPHRASE: PASSPHRASE })
}

interface Started { child: ChildProcess, firstLine: string, started: { peerId: string, api: string, addrs: string[] }, stderr: () => string, exited: Promise<number | null> }

/** `bkg start …` with stdout a pipe (not a terminal): its first stdout line, parsed. */
async function startNode (args: string[], dir: string): Promise<Started> {
  const child = spawn(process.execPath, [CLI_ENTRY, 'start', ...args], { cwd: dir, env: env(dir), stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const firstLine = await new Promise<string>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`no stdout line within 30 s; stderr:\n${stderr}`)), 30_000)
    createInterface({ input: child.stdout! }).once('line', (line) => { clearTimeout(guard); resolve(line) })
    void exited.then((code) => { clearTimeout(guard); reject(new Error(`exited with ${code}; stderr:\n${stderr}`)) })
  })
  let started: Started['started']
  try {
    started = JSON.parse(firstLine)
  } catch {
    child.kill('SIGKILL')
    throw new Error(`first stdout line is not JSON: ${firstLine}`)
  }
  return { child, firstLine, started, stderr: () => stderr, exited }
}

/** The shell commands of the README's "A mesh by hand", one argv per line. */
async function readmeMeshCommands (): Promise<string[][]> {
  const text = await readFile(README, 'utf8')
  const section = text.slice(text.indexOf('## A mesh by hand'))
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
  return block.replace(/\\\n\s*/g, ' ').split('\n')
    .map((line) => line.replace(/\s+#.*$/, '').trim())
    .filter((line) => line !== '')
    .map((line) => [...line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((match) => match[1] ?? match[2] ?? match[3]))
}

async function holdPort (): Promise<{ server: Server, port: number }> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, port: (server.address() as { port: number }).port }
}

describe('a new operator, README in hand', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let dir: string
  let n1: string
  let node: Started | undefined
  let startArgs: string[]

  beforeAll(async () => {
    tmp = await tempDir('bkg-operator-test-')
    dir = tmp.dir
  })

  afterAll(async () => {
    if (node != null && node.child.exitCode == null) {
      node.child.kill('SIGTERM')
      await node.exited
    }
    await tmp?.remove()
  })

  it('builds the README\'s first mesh, whose first stdout line is the started event', async () => {
    const commands = await readmeMeshCommands()
    expect(commands.length).toBeGreaterThanOrEqual(4)
    const inDir = (arg: string): string => arg.startsWith('./') ? join(dir, arg) : arg
    for (const argv of commands) {
      if (argv[0] === 'cp') {
        const [from, to] = argv.slice(1).map(inDir)
        await copyFile(from, to.endsWith('/') || !to.includes('.') ? join(to, from.split('/').pop()!) : to)
        continue
      }
      // the README's recommended form, run here on this Node binary
      const args = argv[0] === 'npx' ? argv.slice(2) : argv[0] === 'bin/bkg' ? argv.slice(1) : null
      expect(args, argv.join(' ')).not.toBeNull()
      if (args![0] === 'start') {
        // the README's ports may be taken on a test machine: any free ones instead
        startArgs = args!.slice(1).map(inDir).map((arg, i, all) => all[i - 1] === '--listen' ? '/ip4/127.0.0.1/tcp/0' : all[i - 1] === '--api' ? '127.0.0.1:0' : arg)
        n1 = startArgs[startArgs.indexOf('--data') + 1]
        node = await startNode([...startArgs, '--log-level', 'info'], dir)
        continue
      }
      const run = await bkg(args!.map(inDir), dir)
      expect(run.code, `${argv.join(' ')}\n${run.stderr}`).toBe(0)
    }
    expect(node, 'the README starts a node').toBeDefined()
    // info logs are written before the node is up: they go to stderr, stdout starts with the event
    expect(node!.firstLine).toMatch(/^\{"event":"started",/)
    expect(node!.started.api).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(node!.stderr()).toMatch(/node started/)
    expect(isAbsolute(n1)).toBe(true)
  })

  it('can then do what docs/operations.md does next: tokens, events, model pack and publish', async () => {
    const token = await bkg(['token', 'create', '--data', n1, '--namespace', 'lab', '--role', 'writer', '--ttl', '1h'], dir)
    expect(token.code, token.stderr).toBe(0)
    expect(token.stderr).not.toMatch(/warning/)
    const writer = token.stdout.trim().split('\n').pop()!
    const event = await fetch(`${node!.started.api}/api/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' },
      body: JSON.stringify({ namespace: 'lab', type: 'run.finished', payload: { run: 42, ok: true } })
    })
    expect(event.status, await event.clone().text()).toBe(201)

    await mkdir(join(dir, 'model'))
    await writeFile(join(dir, 'model', 'weights.bin'), Buffer.alloc(70_000, 7))
    const pack = await bkg(['model', 'pack', join(dir, 'model'), '--name', 'tiny', '--version', '1.0.0', '--data', n1, '--out', join(dir, 'tiny.bkg')], dir)
    expect(pack.code, pack.stderr).toBe(0)
    const publish = await bkg(['model', 'publish', join(dir, 'tiny.bkg'), '--data', n1], dir)
    expect(publish.code, publish.stderr).toBe(0)
  })

  it('warns when a token is for a namespace the node\'s certificate does not list', async () => {
    const run = await bkg(['token', 'create', '--data', n1, '--namespace', 'elsewhere'], dir)
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout.trim().split('\n').pop()).toMatch(/^bkgt1\./)
    expect(run.stderr).toMatch(/^bkg: warning: this node's certificate does not list namespace elsewhere \(it lists: lab\)/m)
    // the same through a running node's API
    const viaApi = await bkg(['token', 'create', '--api', node!.started.api, '--token', (await readFile(join(n1, 'api-token'), 'utf8')).trim(), '--namespace', 'elsewhere'], dir)
    expect(viaApi.code, viaApi.stderr).toBe(0)
    expect(viaApi.stderr).toMatch(/warning: .*does not list namespace elsewhere/)
  })

  it('answers API mistakes with the field and the documented code', async () => {
    const admin = (await readFile(join(n1, 'api-token'), 'utf8')).trim()
    const post = async (body: string): Promise<{ status: number, error: { code: string, message: string } }> => {
      const response = await fetch(`${node!.started.api}/api/v1/events`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body })
      return { status: response.status, error: ((await response.json()) as { error: { code: string, message: string } }).error }
    }
    expect(await post(JSON.stringify({ namespace: 'lab', type: 't' }))).toEqual({ status: 400, error: { code: 'invalid_request', message: 'body.payload: required' } })
    const batch = Array.from({ length: 1001 }, () => ({ namespace: 'lab', type: 't', payload: 1 }))
    expect(await post(JSON.stringify({ events: batch }))).toEqual({ status: 400, error: { code: 'invalid_request', message: 'body.events: at most 1000 items' } })
    expect((await post('{"namespace":')).error.code).toBe('invalid_request')
    const unknown = await fetch(`${node!.started.api}/api/v1/no-such-route`)
    expect(unknown.status).toBe(404)
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('not_found')
  })

  it('refuses a second node on the same data dir, naming the running one, and leaves its api.json', async () => {
    const second = await bkg(['start', ...startArgs], dir)
    expectCleanFailure(second, new RegExp(`in use by a running node \\(pid ${node!.child.pid}, API ${node!.started.api.replace(/[.]/g, '\\.')}\\)`), { exitCode: EXIT.dataDirInUse, singleLine: true })
    expect(JSON.parse(await readFile(join(n1, 'api.json'), 'utf8')).url).toBe(node!.started.api)
    expect((await fetch(`${node!.started.api}/api/v1/health`)).status).toBe(200)
  })

  it('takes over the lock a node killed with -9 left behind', async () => {
    node!.child.kill('SIGKILL')
    await node!.exited
    expect(await pathExists(join(n1, 'node.lock'))).toBe(true)
    node = await startNode(startArgs, dir)
    expect(node.firstLine).toMatch(/^\{"event":"started",/)
    expect(JSON.parse(await readFile(join(n1, 'node.lock'), 'utf8')).pid).toBe(node.child.pid)
    node.child.kill('SIGTERM')
    expect(await node.exited).toBe(0)
    // a clean stop leaves neither the lock nor the API address behind
    expect(await pathExists(join(n1, 'node.lock'))).toBe(false)
    expect(await pathExists(join(n1, 'api.json'))).toBe(false)
  })

  it('a lock from a pid that no longer exists is stale; one from a live process is not', async () => {
    const gone = spawn(process.execPath, ['-e', ''])
    await new Promise((resolve) => gone.once('exit', resolve))
    await writeFile(join(n1, 'node.lock'), JSON.stringify({ pid: gone.pid, host: hostname(), procStart: null, nonce: 'x', since: new Date().toISOString() }))
    node = await startNode(startArgs, dir)
    node.child.kill('SIGTERM')
    expect(await node.exited).toBe(0)

    const alive = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'])
    try {
      await writeFile(join(n1, 'node.lock'), JSON.stringify({ pid: alive.pid, host: hostname(), procStart: null, nonce: 'y', since: new Date().toISOString() }))
      const refused = await bkg(['start', ...startArgs], dir)
      expectCleanFailure(refused, new RegExp(`pid ${alive.pid}, its API is not up yet`), { exitCode: EXIT.dataDirInUse, singleLine: true })
    } finally {
      alive.kill('SIGKILL')
      await rm(join(n1, 'node.lock'), { force: true })
    }
  })
})

describe('expected conditions: one line and a documented exit code', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let dir: string
  let ready: string
  let busy: { server: Server, port: number }

  beforeAll(async () => {
    tmp = await tempDir('bkg-conditions-test-')
    dir = tmp.dir
    busy = await holdPort()
    ready = join(dir, 'ready')
    for (const args of [
      ['ca', 'init', '--out', join(dir, 'ca'), '--name', 'Conditions'],
      ['init', '--data', ready, '--name', 'ready'],
      ['ca', 'sign', '--ca', join(dir, 'ca'), '--csr', join(ready, 'node.csr'), '--out', join(ready, 'node.crt')],
      ['init', '--data', join(dir, 'unsigned'), '--name', 'unsigned']
    ]) {
      const run = await bkg(args, dir)
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(0)
    }
    await copyFile(join(dir, 'ca', 'ca.crt'), join(ready, 'ca.crt'))
    await copyFile(join(dir, 'ca', 'ca.crt'), join(dir, 'unsigned', 'ca.crt'))
  })

  afterAll(async () => {
    busy?.server.close()
    await tmp?.remove()
  })

  it('a busy listen port, a busy API port, a missing node.crt', async () => {
    // one at a time: a start holds the data dir's lock while it runs
    const listen = await bkg(['start', '--data', ready, '--listen', `/ip4/127.0.0.1/tcp/${busy.port}`, '--api', '127.0.0.1:0'], dir)
    expectCleanFailure(listen, new RegExp(`^bkg: listen address /ip4/127\\.0\\.0\\.1/tcp/${busy.port} is in use by another process: .*--listen`), { exitCode: EXIT.addressInUse, singleLine: true })
    expect(listen.stderr).not.toMatch(/faultTolerance/)
    const api = await bkg(['start', '--data', ready, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', `127.0.0.1:${busy.port}`], dir)
    expectCleanFailure(api, new RegExp(`^bkg: API address 127\\.0\\.0\\.1:${busy.port} is in use by another process: .*--api`), { exitCode: EXIT.addressInUse, singleLine: true })
    // a failed start leaves no lock behind
    expect(await pathExists(join(ready, 'node.lock'))).toBe(false)
    const unsigned = await bkg(['start', '--data', join(dir, 'unsigned'), '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0'], dir)
    expectCleanFailure(unsigned, /missing .*node\.crt: .*bkg ca sign/, { exitCode: EXIT.notSetUp, singleLine: true })
  })

  it('bkg devnet on a busy port says so once', async () => {
    const run = await bkg(['devnet', '--nodes', '1', '--base-port', String(busy.port), '--dir', join(dir, 'devnet')], dir)
    expectCleanFailure(run, /node-1 did not start: API address .* is in use .*--base-port/, { exitCode: EXIT.addressInUse, singleLine: true })
  })

  it('command-line mistakes are one bkg: line with exit code 2', async () => {
    const [missing, unknownCommand, badValue, unknownOption] = await Promise.all([
      bkg(['ca', 'sign', '--ca', join(dir, 'ca')], dir),
      bkg(['strat'], dir),
      bkg(['devnet', '--nodes', 'many'], dir),
      bkg(['start', '--data', ready, '--no-such-flag'], dir)
    ])
    expectCleanFailure(missing, /^bkg: required option '--csr <file>' not specified \(see `bkg ca sign --help`\)$/m, { exitCode: EXIT.usage, singleLine: true })
    expectCleanFailure(unknownCommand, /^bkg: unknown command 'strat'.*\(see `bkg --help`\)$/m, { exitCode: EXIT.usage, singleLine: true })
    expectCleanFailure(badValue, /^bkg: option '--nodes <n>' argument 'many' is invalid\. "many" is not a positive integer/, { exitCode: EXIT.usage, singleLine: true })
    expectCleanFailure(unknownOption, /^bkg: unknown option '--no-such-flag' \(see `bkg start --help`\)$/m, { exitCode: EXIT.usage, singleLine: true })
  })
})

describe('npx bkg under the system Node', () => {
  // the README's form: the system npm's npx, whatever Node it runs on (bin/bkg then runs the pinned one)
  const npx = '/usr/bin/npx'
  it.skipIf(!existsSync(npx))('runs quietly', () => {
    const root = dirname(fileURLToPath(README))
    // a shell's environment, not the npm_* settings of the npx that runs these tests
    const shellEnv = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_|^NODE$/i.test(key)))
    // a fresh npm cache: npx's first call (an empty npx cache) is when it installs the project into
    // its cache and checks its engines; later calls reuse that
    const cache = mkdtempSync(join(tmpdir(), 'bkg-npx-cache-'))
    let run
    try {
      run = spawnSync(npx, ['bkg', '--help'], { cwd: root, encoding: 'utf8', env: { ...shellEnv, npm_config_cache: cache, PATH: '/usr/local/bin:/usr/bin:/bin' }, timeout: 60_000 })
    } finally {
      rmSync(cache, { recursive: true, force: true })
    }
    expect(run.status, run.stderr).toBe(0)
    expect(run.stdout).toMatch(/^Usage: bkg/)
    expect(run.stderr).toBe('')
  })
})

describe('Ctrl-C on bkg model pull', () => {
  it('says the pull goes on in the node, and how to follow it', async () => {
    // a node API that pulls for ever: the CLI only talks HTTP to it
    const job = { id: 'a1b2c3d4e5f60718', state: 'fetching', name: 'tiny', version: '1.0.0', totalBytes: 1000, bytes: 10, blocks: 1, resumedBlocks: 0, fetchedBlocks: 1, peers: ['p'], error: null, startedAt: new Date().toISOString(), finishedAt: null }
    let polled = 0
    const server = createHttpServer((request, response) => {
      if (request.url?.startsWith('/api/v1/models/pulls/')) polled++
      response.writeHead(request.method === 'POST' ? 202 : 200, { 'content-type': 'application/json' })
      setTimeout(() => response.end(JSON.stringify(job)), 50)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const api = `http://127.0.0.1:${(server.address() as { port: number }).port}`
    const tmp = await tempDir('bkg-pull-test-')
    try {
      const child = spawn(process.execPath, [CLI_ENTRY, 'model', 'pull', 'tiny@1.0.0', '--api', api, '--token', 't'], { cwd: tmp.dir, env: env(tmp.dir), stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
      await waitFor('the CLI follows the pull', async () => polled >= 2, 20_000, 50)
      child.kill('SIGINT')
      expect(await exited, stderr).toBe(EXIT.interrupted)
      expect(stderr).toMatch(/^bkg: interrupted: the pull of tiny@1\.0\.0 goes on in the node \(job a1b2c3d4e5f60718\)/m)
      expect(stderr).toContain(`bkg model pull tiny@1.0.0 --api ${api}`)
      expect(stderr).toContain(`${api}/api/v1/models/pulls/a1b2c3d4e5f60718`)
      expect(stderr).not.toMatch(/^\s+at /m)
    } finally {
      server.close()
      await tmp.remove()
    }
  })
})

describe('a revoked node', () => {
  it('says in its own log that it was refused as revoked', async () => {
    const tmp = await tempDir('bkg-revoked-log-test-')
    const mesh = await TestMesh.create(tmp.dir)
    const admin = await mesh.addNode('admin', { roles: ['admin', 'bootstrap', 'member'] })
    const victim = await mesh.addNode('victim')
    const logs: string[] = []
    let proc: NodeProcess | undefined
    try {
      await admin.start()
      proc = await spawnNode({
        args: ['--data', victim.paths.dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', '--log-level', 'info', '--bootstrap', admin.addrs[0]],
        onLog: (line) => logs.push(line)
      })
      await waitFor('victim admitted', async () => (await peerIdsOf(admin)).includes(victim.peerId), 20_000)
      await revokeCertificate(mesh.caDir, { certPem: await readFile(victim.paths.cert, 'utf8') })
      const { crlPem } = await issueCrl(mesh.caDir, { days: 7 })
      expect((await admin.api('POST', '/api/v1/admin/crl', { pem: crlPem })).status).toBe(200)
      await waitFor('victim dropped', async () => !(await peerIdsOf(admin)).includes(victim.peerId), 10_000)
      // the victim tries again, as its bootstrapper would
      const dial = await fetch(`${proc.started.api}/api/v1/peers/dial`, {
        method: 'POST',
        headers: { authorization: `Bearer ${victim.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ addr: admin.addrs[0] })
      })
      expect(dial.status).toBeGreaterThanOrEqual(400)
      const refusal = await waitFor('the victim logs its refusal', async () => logs.find((line) => /admission refused/.test(line) && !/"level":30/.test(line)), 10_000)
      expect(logs.join('\n')).not.toMatch(/\[object Event\]/)
      expect(refusal, logs.filter((line) => /admission|refused/.test(line)).join('\n')).toMatch(/this node's own certificate is no longer valid \(the certificate [0-9a-f]+ was revoked/)
    } finally {
      await proc?.stop()
      await mesh.stopAll()
      await tmp.remove()
    }
  })
})
