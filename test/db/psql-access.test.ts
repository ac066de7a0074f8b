import { spawn } from 'node:child_process'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { database, type Database } from '../../node/db/index.ts'
import { defaultCacheDir } from '../../node/config/index.ts'
import { PsqlAccess } from '../../node/db/index.ts'
import { tempDir } from '../helpers/mesh.ts'

const INSERT = `INSERT INTO bkg.events (origin, seq, id, namespace, type, payload, hlc, prev_seq, sig)
  VALUES ('o', $1::bigint, $2, 'a', 't', '{}', '000000000000001-00000', $1::bigint - 1, 's')`

interface PsqlRun { code: number | null, stdout: string, stderr: string }

interface PsqlSession {
  done: Promise<PsqlRun>
  write: (line: string) => void
  end: () => void
  /** resolves once psql printed this line: the only sure sign of where a session has got to */
  printed: (line: string) => Promise<void>
}

/**
 * Runs the real psql. Never spawnSync: the bridge lives in this process, and a blocked event
 * loop could not answer the psql it waits for.
 */
function startPsql (connect: string, args: string[], opts: { env?: Record<string, string>, stdin?: boolean, user?: number } = {}): PsqlSession {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', PGCONNECT_TIMEOUT: '30', ...opts.env }
  const base = ['-X', '-q', '-A', '-t', '-w', '-v', 'ON_ERROR_STOP=1', connect, ...args]
  const [cmd, argv] = opts.user != null
    ? ['setpriv', [`--reuid=${opts.user}`, `--regid=${opts.user}`, '--clear-groups', 'psql', ...base]]
    : ['psql', base]
  const child = spawn(cmd, argv, { env, stdio: [opts.stdin === true ? 'pipe' : 'ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const done = new Promise<PsqlRun>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => { resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() }) })
  })
  const printed = async (line: string): Promise<void> => {
    for (let waited = 0; !stdout.split('\n').includes(line); waited += 20) {
      if (waited > 30_000 || child.exitCode != null) throw new Error(`psql never printed ${line}: ${stdout} ${stderr}`)
      await sleep(20)
    }
  }
  return { done, write: (line) => { child.stdin?.write(`${line}\n`) }, end: () => { child.stdin?.end() }, printed }
}

const psql = async (connect: string, args: string[], opts: { env?: Record<string, string>, user?: number } = {}): Promise<PsqlRun> => await startPsql(connect, args, opts).done

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

describe('psql access to the embedded database', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: Database
  let access: PsqlAccess
  let connect: string
  let seq = 0
  const insert = async (): Promise<void> => {
    const n = ++seq
    await db.asNode(async (tx) => { await tx.query(INSERT, [n, `id-${n}`]) })
  }
  const count = async (): Promise<number> => await db.asNode(async (tx) => (await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM bkg.events')).rows[0].n)

  beforeAll(async () => {
    tmp = await tempDir()
    db = database({ dir: join(tmp.dir, 'db'), templateDir: defaultCacheDir() })({ log: pino({ level: 'silent' }) })
    await insert()
    await insert()
    access = new PsqlAccess({ db, socketDir: join(tmp.dir, 'psql'), log: pino({ level: 'silent' }), holdTimeoutMs: 3_000 })
    connect = (await access.start()).connect
  }, 60_000)

  afterAll(async () => {
    await access?.stop()
    await db?.stop()
    await tmp?.remove()
  })

  it('psql answers over the Unix socket', async () => {
    expect(connect).toBe(`host=${join(tmp.dir, 'psql')} port=5432 user=postgres dbname=postgres`)
    const run = await psql(connect, ['-c', 'select count(*) from bkg.events'])
    expect(run, run.stderr).toMatchObject({ code: 0, stdout: '2' })
  })

  it('keeps other OS users out: the socket sits in a 0700 directory', async () => {
    expect((await stat(join(tmp.dir, 'psql'))).mode & 0o777).toBe(0o700)
    expect((await stat(join(tmp.dir, 'psql', '.s.PGSQL.5432'))).mode & 0o777).toBe(0o600)
    // root passes any mode, so the refusal itself is only observable as root switching to nobody
    if (process.getuid?.() !== 0) return
    const run = await psql(connect, ['-c', 'select 1'], { user: 65534 })
    expect(run.code).not.toBe(0)
    expect(run.stderr).toMatch(/Permission denied/)
  })

  it('is read-only unless a transaction asks for READ WRITE, and no session state reaches the node', async () => {
    const denied = await psql(connect, ['-c', 'delete from bkg.events'])
    expect(denied.code).not.toBe(0)
    expect(denied.stderr).toMatch(/read-only transaction/)
    const role = await psql(connect, ['-c', 'set role bkg_reader', '-c', "set search_path = 'nowhere'", '-c', "select current_user || ' ' || current_setting('search_path')"])
    expect(role, role.stderr).toMatchObject({ code: 0, stdout: 'postgres public' })
    // the superuser can lift the guard on purpose; rolled back here to leave the data alone
    const write = await psql(connect, ['-c', 'begin read write; delete from bkg.events; rollback'])
    expect(write, write.stderr).toMatchObject({ code: 0 })
    const node = await db.asNode(async (tx) => (await tx.query<{ ro: string, role: string }>("SELECT current_setting('transaction_read_only') AS ro, current_user AS role")).rows[0])
    expect(node).toEqual({ ro: 'off', role: 'bkg_node' })
    expect(await count()).toBe(2)
  })

  it('a psql statement waits for a node transaction instead of running inside it', async () => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => { release = resolve })
    const nodeTx = db.asNode(async (tx) => {
      await tx.query(INSERT, [++seq, `id-${seq}`])
      await gate
    })
    const reading = psql(connect, ['-c', 'select count(*) from bkg.events'])
    let done = false
    void reading.then(() => { done = true })
    await sleep(500)
    expect(done).toBe(false)
    release()
    await nodeTx
    // run inside the node's transaction it would have seen the uncommitted row, or ended the transaction
    expect(await reading).toMatchObject({ code: 0, stdout: '3' })
    expect(await count()).toBe(3)
  })

  it('the node keeps working around an open psql session and waits out its transaction', async () => {
    const session = startPsql(connect, [], { stdin: true })
    session.write('select count(*) from bkg.events;')
    session.write('begin;')
    session.write("select 'in-tx';")
    await session.printed('in-tx')
    // psql sits in an open transaction: the node's write has to wait for its COMMIT
    const order: string[] = []
    const nodeWrite = insert().then(() => { order.push('node') })
    await sleep(500)
    order.push('commit')
    session.write('commit;')
    session.write('select count(*) from bkg.events;')
    session.end()
    const run = await session.done
    await nodeWrite
    expect(run, run.stderr).toMatchObject({ code: 0 })
    expect(run.stdout.split('\n')).toEqual(['3', 'in-tx', expect.stringMatching(/^[34]$/)])
    expect(order).toEqual(['commit', 'node'])
    expect(await count()).toBe(4)
  })

  it('rolls back and drops a session that keeps a transaction open too long', async () => {
    const session = startPsql(connect, [], { stdin: true })
    session.write('begin read write;')
    session.write("delete from bkg.events where id = 'id-1';")
    session.write("select 'held';")
    await session.printed('held')
    const blocked = Date.now()
    // blocked until the hold timeout (3 s after psql's last message) rolls the delete back
    expect(await count()).toBe(4)
    expect(Date.now() - blocked).toBeGreaterThan(2_000)
    session.write('select 1;')
    session.end()
    const run = await session.done
    expect(run.code).not.toBe(0)
    expect(run.stderr).toMatch(/blocked the node's database|server closed the connection/)
  })

  it('stop() closes the listener and open sessions', async () => {
    const session = startPsql(connect, [], { stdin: true })
    session.write("select 'open';")
    await session.printed('open')
    await access.stop()
    await expect(stat(join(tmp.dir, 'psql', '.s.PGSQL.5432'))).rejects.toThrow()
    session.write('select 2;')
    session.end()
    const closed = await session.done
    expect(closed.stdout.split('\n')[0]).toBe('open')
    expect(closed.code).not.toBe(0)
    const run = await psql(connect, ['-c', 'select 1'])
    expect(run.code).toBe(2)
    expect(run.stderr).toMatch(/No such file or directory/)
    expect(await count()).toBe(4)
  })
})

describe('psql access with the admin token', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: Database
  const token = 'admin-token-for-the-test'

  beforeAll(async () => {
    tmp = await tempDir()
    db = database({ dir: join(tmp.dir, 'db'), templateDir: defaultCacheDir() })({ log: pino({ level: 'silent' }) })
    // opening takes seconds; psql's connect timeout should not have to cover it
    await db.open()
  }, 60_000)

  afterAll(async () => {
    await db?.stop()
    await tmp?.remove()
  })

  it('refuses TCP without a token and anything but loopback', () => {
    const log = pino({ level: 'silent' })
    expect(() => new PsqlAccess({ db, listen: { host: '127.0.0.1', port: 0 }, log })).toThrow(/admin token/)
    expect(() => new PsqlAccess({ db, listen: { host: '0.0.0.0', port: 0 }, adminToken: token, log })).toThrow(/loopback/)
    expect(() => new PsqlAccess({ db, log })).toThrow(/exactly one/)
  })

  it('over loopback TCP only the admin token gets in', async () => {
    const access = new PsqlAccess({ db, listen: { host: '127.0.0.1', port: 0 }, adminToken: token, log: pino({ level: 'silent' }) })
    const { connect, command } = await access.start()
    try {
      expect(connect).toMatch(/^host=127\.0\.0\.1 port=\d+ sslmode=disable user=postgres dbname=postgres$/)
      expect(command).toBe(`psql '${connect}'`)
      const ok = await psql(connect, ['-c', 'select count(*) from bkg.events'], { env: { PGPASSWORD: token } })
      expect(ok, ok.stderr).toMatchObject({ code: 0, stdout: '0' })
      const wrong = await psql(connect, ['-c', 'select 1'], { env: { PGPASSWORD: `${token}x` } })
      expect(wrong.code).toBe(2)
      expect(wrong.stderr).toMatch(/password authentication failed/)
      const none = await psql(connect, ['-c', 'select 1'])
      expect(none.code).toBe(2)
      expect(none.stderr).toMatch(/no password supplied/)
    } finally {
      await access.stop()
    }
  })

  it('a Unix socket can demand the token too', async () => {
    const access = new PsqlAccess({ db, socketDir: join(tmp.dir, 'psql'), adminToken: token, log: pino({ level: 'silent' }) })
    const { connect } = await access.start()
    try {
      expect((await psql(connect, ['-c', 'select 1'])).stderr).toMatch(/no password supplied/)
      expect(await psql(connect, ['-c', 'select 1'], { env: { PGPASSWORD: token } })).toMatchObject({ code: 0, stdout: '1' })
    } finally {
      await access.stop()
    }
  })
})
