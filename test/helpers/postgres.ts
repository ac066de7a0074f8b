import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { accessSync, closeSync, constants, openSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { appendFile, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'

/**
 * A throwaway PostgreSQL server for tests: its own data dir in a temp dir, a free port on 127.0.0.1,
 * the unix socket inside the temp dir. Needs the Debian `postgresql` package (scripts/test-deps.sh).
 */
export interface PostgresServer {
  /** superuser URL: postgres://postgres:<password>@127.0.0.1:<port>/postgres */
  readonly url: string
  readonly host: '127.0.0.1'
  readonly port: number
  readonly user: 'postgres'
  readonly password: string
  /** the temp dir holding everything below; gone after cleanup() */
  readonly dir: string
  readonly dataDir: string
  readonly socketDir: string
  readonly logFile: string
  /** the directory of initdb, postgres, pg_ctl, psql, pg_isready */
  readonly binDir: string
  /** the postmaster's pid, or undefined while stopped */
  readonly pid: number | undefined
  /** url with another database name */
  urlFor (database: string): string
  /** starts the server again (same port, same data dir) and waits until it accepts connections; no-op while running */
  start (): Promise<void>
  /** clean fast shutdown (`pg_ctl stop -m fast`): clients are disconnected, nothing is lost; no-op while stopped */
  stop (): Promise<void>
  restart (): Promise<void>
  /** a crash: SIGKILL to the postmaster and its processes; start() then runs crash recovery */
  kill (): Promise<void>
  /** stops the server (killing it if it will not stop) and removes the temp dir */
  cleanup (): Promise<void>
  /** runs SQL through psql as the superuser; resolves with its unaligned, tuples-only output, trimmed */
  psql (sql: string, database?: string): Promise<string>
}

const HOST = '127.0.0.1'
const READY_TIMEOUT_MS = 20_000

/** The newest /usr/lib/postgresql/<ver>/bin (where Debian puts the server), else the PATH. */
export function findPostgresBinDir (): string {
  const need = ['initdb', 'postgres', 'pg_ctl', 'pg_isready']
  const complete = (dir: string) => need.every((name) => {
    try {
      accessSync(join(dir, name), constants.X_OK)
      return true
    } catch {
      return false
    }
  })
  let versions: string[] = []
  try {
    versions = readdirSync('/usr/lib/postgresql').filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a))
  } catch {}
  for (const v of versions) {
    if (complete(`/usr/lib/postgresql/${v}/bin`)) return `/usr/lib/postgresql/${v}/bin`
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir !== '' && complete(dir)) return dir
  }
  throw new Error('PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_isready) not found in /usr/lib/postgresql/*/bin or PATH: run `bash scripts/test-deps.sh` as root')
}

interface RunAs { uid?: number, gid?: number }

/** postgres and initdb refuse to run as root, so as root they run as the `postgres` system user. */
function serverUser (): RunAs {
  if (process.getuid?.() !== 0) return {}
  let entry = lookupUser('postgres')
  if (entry == null) {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/var/lib/postgresql', '--shell', '/usr/sbin/nologin', 'postgres'])
    entry = lookupUser('postgres')
    if (entry == null) throw new Error('could not create the postgres system user')
  }
  return entry
}

function lookupUser (name: string): { uid: number, gid: number } | undefined {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const fields = line.split(':')
    if (fields[0] === name) return { uid: Number(fields[2]), gid: Number(fields[3]) }
  }
  return undefined
}

/** Without the caller's PG* variables (PGHOST, PGPORT, PGDATA… would redirect the tools) and in the C locale. */
function cleanEnv (home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PG') && !key.startsWith('LC_') && key !== 'LANG') env[key] = value
  }
  return { ...env, LC_ALL: 'C', HOME: home }
}

function run (file: string, args: string[], options: RunAs & { env: NodeJS.ProcessEnv, timeout?: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { ...options, timeout: options.timeout ?? 60_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error != null) reject(new Error(`${file.split('/').pop()} ${args.join(' ')} failed: ${stderr.trim() || error.message}`))
      else resolve(stdout)
    })
  })
}

/** A port nothing listens on now: bind port 0, read it, close. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, HOST, () => resolve())
  })
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

async function logTail (logFile: string, lines = 30): Promise<string> {
  try {
    return (await readFile(logFile, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no server log)'
  }
}

/** Direct children of `pid`, from /proc. */
function childPids (pid: number): number[] {
  const pids: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      // the command name in field 2 may hold spaces and parens: the fields after it start after the last ')'
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === pid) pids.push(Number(name))
    } catch {}
  }
  return pids
}

/** Gone or a zombie: either way it no longer holds the server's shared memory or port. */
function processGone (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return true
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const live = new Set<{ pid: () => number | undefined, dir: string }>()
let exitHookInstalled = false

/** A test worker that dies without cleanup() would otherwise leave servers running and temp dirs behind. */
function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const server of live) {
      const pid = server.pid()
      if (pid != null) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {}
      }
      rmSync(server.dir, { recursive: true, force: true })
    }
  })
}

/** initdb into a fresh temp dir and start the server; see PostgresServer. */
export async function startPostgres (): Promise<PostgresServer> {
  const binDir = findPostgresBinDir()
  const runAs = serverUser()
  const dir = await mkdtemp(join(tmpdir(), 'bkg-pg-'))
  const dataDir = join(dir, 'data')
  const socketDir = join(dir, 'sock')
  const logFile = join(dir, 'server.log')
  const env = cleanEnv(dir)
  const password = randomBytes(16).toString('hex')
  let port = await freePort()
  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()
  let everStarted = false
  const entry = { pid: () => child?.pid, dir }
  live.add(entry)
  installExitHook()

  async function initdb (): Promise<void> {
    await mkdir(socketDir)
    const pwFile = join(dir, 'pwfile')
    await writeFile(pwFile, `${password}\n`, { mode: 0o600 })
    if (runAs.uid != null) {
      for (const path of [dir, socketDir, pwFile]) await chown(path, runAs.uid, runAs.gid!)
    }
    // --no-sync: a test cluster need not survive a power cut, and it saves seconds
    await run(join(binDir, 'initdb'), ['-D', dataDir, '-U', 'postgres', `--pwfile=${pwFile}`, '-E', 'UTF8', '--locale=C',
      '--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync', '--no-instructions'], { ...runAs, env })
    await rm(pwFile)
    // initdb's pg_hba.conf allows host (and replication) connections from 127.0.0.1/32 and ::1 only, with the password
    const conf = [
      '',
      '# bkg test helper (test/helpers/postgres.ts)',
      `listen_addresses = '${HOST}'`,
      `unix_socket_directories = '${socketDir}'`,
      'wal_level = logical',
      'max_wal_senders = 10',
      'max_replication_slots = 10',
      // tests only: durability against an OS crash is not under test; kill() kills processes, and
      // their writes survive in the page cache, so crash recovery still works with fsync off
      'fsync = off',
      'full_page_writes = off',
      'shared_buffers = 32MB',
      "log_line_prefix = '%m [%p] '",
      ''
    ].join('\n')
    await appendFile(join(dataDir, 'postgresql.conf'), conf)
  }

  /** One launch attempt: resolves once it accepts connections, 'port-taken' if the port was grabbed. */
  async function launch (deadline: number): Promise<'ok' | 'port-taken'> {
    const logStart = await readFile(logFile, 'utf8').then((text) => text.length, () => 0)
    const logFd = openSync(logFile, 'a')
    // the port goes on the command line, not in postgresql.conf, so a retry on another port is just a new launch
    const proc = spawn(join(binDir, 'postgres'), ['-D', dataDir, '-p', String(port)], { ...runAs, env, stdio: ['ignore', logFd, logFd] })
    closeSync(logFd)
    let gone = false
    exited = new Promise((resolve) => proc.once('exit', () => {
      gone = true
      resolve()
    }))
    proc.once('error', () => {})
    child = proc
    while (true) {
      if (gone || proc.pid == null) {
        child = undefined
        const log = (await readFile(logFile, 'utf8').catch(() => '')).slice(logStart)
        if (/could not (create any TCP\/IP sockets|bind IPv4 address)|Address already in use/.test(log)) return 'port-taken'
        throw new Error(`postgres exited during start-up (port ${port}); server log:\n${await logTail(logFile)}`)
      }
      if (await accepting(proc.pid)) return 'ok'
      if (Date.now() > deadline) {
        proc.kill('SIGKILL')
        await exited
        child = undefined
        throw new Error(`postgres did not accept connections within ${READY_TIMEOUT_MS / 1000} s (port ${port}); server log:\n${await logTail(logFile)}`)
      }
      await sleep(50)
    }
  }

  /**
   * The postmaster marks postmaster.pid "ready" once it accepts connections (what `pg_ctl -w` waits for);
   * the pid must be ours, as a killed server leaves its file behind. pg_isready then confirms over TCP.
   */
  async function accepting (pid: number): Promise<boolean> {
    let lines: string[]
    try {
      lines = (await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')
    } catch {
      return false
    }
    if (Number(lines[0]) !== pid || lines[7]?.trim() !== 'ready') return false
    try {
      await run(join(binDir, 'pg_isready'), ['-q', '-h', HOST, '-p', String(port), '-t', '2'], { env })
      return true
    } catch {
      return false
    }
  }

  async function start (): Promise<void> {
    if (child != null) return
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (true) {
      if (await launch(deadline) === 'ok') break
      if (Date.now() > deadline) throw new Error(`port ${port} stayed taken; server log:\n${await logTail(logFile)}`)
      // before the first start nobody knows the port yet, so take another; after it, the tests need the same one
      if (!everStarted) port = await freePort()
      else await sleep(250)
    }
    everStarted = true
  }

  async function stop (): Promise<void> {
    if (child == null) return
    try {
      await run(join(binDir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '20'], { ...runAs, env, timeout: 30_000 })
    } catch (error) {
      await kill()
      throw error
    }
    await exited
    child = undefined
  }

  async function kill (): Promise<void> {
    const proc = child
    if (proc?.pid == null) return
    // the backends too: left alone they linger until they notice the postmaster is gone, and a new
    // postmaster refuses to start while they still hold the old shared memory
    const children = childPids(proc.pid)
    proc.kill('SIGKILL')
    for (const pid of children) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
    await exited
    child = undefined
    const until = Date.now() + 5_000
    while (!children.every(processGone) && Date.now() < until) await sleep(20)
  }

  async function cleanup (): Promise<void> {
    try {
      await stop()
    } catch {
      await kill()
    }
    await rm(dir, { recursive: true, force: true })
    live.delete(entry)
  }

  const server: PostgresServer = {
    host: HOST,
    user: 'postgres',
    password,
    dir,
    dataDir,
    socketDir,
    logFile,
    binDir,
    get port () { return port },
    get url () { return this.urlFor('postgres') },
    get pid () { return child?.pid },
    urlFor: (database) => `postgres://postgres:${password}@${HOST}:${port}/${encodeURIComponent(database)}`,
    start,
    stop,
    restart: async () => {
      await stop()
      await start()
    },
    kill,
    cleanup,
    psql: async (sql, database = 'postgres') => (await run(join(binDir, 'psql'),
      ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', server.urlFor(database), '-c', sql], { env })).trim()
  }

  try {
    await initdb()
    await start()
  } catch (error) {
    await cleanup()
    throw error
  }
  return server
}
