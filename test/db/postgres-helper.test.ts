import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { startPostgres, type PostgresServer } from '../helpers/postgres.ts'

/** 'refused' when nothing listens on the port, 'open' when something accepts the TCP connection. */
function tcpProbe (port: number): Promise<'open' | 'refused'> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('connect', () => {
      socket.destroy()
      resolve('open')
    })
    socket.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') resolve('refused')
      else reject(error)
    })
  })
}

/** pg_isready's exit code: 0 accepting, 2 no response. */
function pgIsReady (server: PostgresServer): Promise<number> {
  return new Promise((resolve) => {
    execFile(join(server.binDir, 'pg_isready'), ['-h', server.host, '-p', String(server.port), '-t', '3'], (error) => {
      resolve(error == null ? 0 : Number(error.code))
    })
  })
}

describe('test/helpers/postgres.ts: a real throwaway PostgreSQL server', () => {
  let pg: PostgresServer | undefined

  afterAll(async () => {
    await pg?.cleanup()
  })

  it('starts, stops, starts again on the same port and data dir, survives a kill, and cleans up', async () => {
    pg = await startPostgres()
    expect(pg.url).toBe(`postgres://postgres:${pg.password}@127.0.0.1:${pg.port}/postgres`)
    expect(await pg.psql('select 1')).toBe('1')
    expect(await pgIsReady(pg)).toBe(0)
    expect(await pg.psql('SHOW wal_level')).toBe('logical')
    expect(Number(await pg.psql('SHOW max_replication_slots'))).toBeGreaterThanOrEqual(4)
    expect(Number(await pg.psql('SHOW max_wal_senders'))).toBeGreaterThanOrEqual(4)
    expect(await pg.psql('SHOW listen_addresses')).toBe('127.0.0.1')
    await pg.psql('CREATE TABLE t (n int); INSERT INTO t VALUES (42)')

    const { port, dataDir } = pg
    await pg.stop()
    expect(pg.pid).toBeUndefined()
    expect(await tcpProbe(port)).toBe('refused')
    expect(await pgIsReady(pg)).toBe(2)
    await expect(pg.psql('select 1')).rejects.toThrow()

    await pg.start()
    expect(pg.port).toBe(port)
    expect(pg.dataDir).toBe(dataDir)
    expect(await pg.psql('select 1')).toBe('1')
    expect(await pg.psql('SHOW wal_level')).toBe('logical')
    expect(await pg.psql('SELECT n FROM t')).toBe('42')

    await pg.restart()
    expect(await pg.psql('SELECT n FROM t')).toBe('42')

    // a crash: committed rows come back through crash recovery
    await pg.psql('INSERT INTO t VALUES (43)')
    await pg.kill()
    expect(await tcpProbe(port)).toBe('refused')
    await pg.start()
    expect(await pg.psql('SELECT string_agg(n::text, \',\' ORDER BY n) FROM t')).toBe('42,43')

    // only loopback TCP with the password: a wrong one is turned away
    const wrong = pg.url.replace(pg.password, 'wrong')
    await expect(new Promise((resolve, reject) => execFile(join(pg!.binDir, 'psql'), ['-X', '-d', wrong, '-c', 'select 1'],
      { env: { ...process.env, PGPASSWORD: '' } }, (error) => error == null ? resolve(undefined) : reject(error)))).rejects.toThrow(/password authentication failed/)

    const dir = pg.dir
    expect(existsSync(dir)).toBe(true)
    await pg.cleanup()
    expect(existsSync(dir)).toBe(false)
    expect(await tcpProbe(port)).toBe('refused')
    pg = undefined
  })
})
