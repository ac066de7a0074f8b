import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startPostgres, type PostgresServer } from '../helpers/postgres.ts'
import { listEvents } from '../helpers/events.ts'
import { tempDir, TestMesh, waitFor, type TestNode } from '../helpers/mesh.ts'

function psqlAt (socketDir: string, sql: string): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('psql', [`host=${socketDir} port=5432 user=postgres dbname=postgres`, '-At', '-c', sql])
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code) => resolve({ code, stdout: stdout.trim(), stderr }))
  })
}

describe('a node synced to a central PostgreSQL (real server, Debian package)', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let central: PostgresServer
  let node: TestNode

  beforeAll(async () => {
    tmp = await tempDir()
    central = await startPostgres()
    mesh = await TestMesh.create(tmp.dir)
    node = await mesh.addNode('synced', { namespaces: ['lab'] })
    await node.start(['--sync', central.url, '--psql'])
  }, 120_000)

  afterAll(async () => {
    await mesh?.stopAll()
    await central?.cleanup()
    await tmp?.remove()
  })

  it('every event arrives centrally exactly once, though the server stops half-way', async () => {
    const publish = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i += 500) {
        const response = await node.api('POST', '/api/v1/events', { events: Array.from({ length: 500 }, (_, k) => ({ namespace: 'lab', type: 'sync', payload: { k: i + k } })) })
        expect(response.status).toBe(201)
      }
    }
    await publish(3000)
    await waitFor('first rows central', async () => Number(await central.psql('SELECT count(*) FROM bkg.events').catch(() => '0')) > 0, 30_000)
    await central.stop()
    await publish(3000)
    await waitFor('sync notices the outage', async () => (await node.api('GET', '/api/v1/admin/db')).body.sync.state === 'retrying', 20_000)
    await central.start()
    const total = (await listEvents(node, 'lab')).length
    expect(total).toBe(6000)
    await waitFor('central caught up', async () => Number(await central.psql('SELECT count(*) FROM bkg.events')) === total, 60_000, 250)
    expect(Number(await central.psql('SELECT count(DISTINCT (origin, seq)) FROM bkg.events'))).toBe(total)
    const status = (await node.api('GET', '/api/v1/admin/db')).body
    // recovered: the last error stays visible for the operator, the state does not
    expect(['idle', 'syncing']).toContain(status.sync.state)
    expect(status.sync.rowsSynced).toBeGreaterThanOrEqual(total - 3000)
    expect(Number(await central.psql(`SELECT local_id FROM bkg.sync_cursors WHERE node = '${node.peerId}'`))).toBeGreaterThan(0)
  })

  it('the central schema enforces the same RLS per namespace', async () => {
    await central.psql("CREATE ROLE lab_reader LOGIN PASSWORD 'x' IN ROLE bkg_reader")
    const visible = await central.psql("SET ROLE lab_reader; SELECT set_config('bkg.namespace', 'other', false); SELECT count(*) FROM bkg.events")
    expect(visible.split('\n').at(-1)).toBe('0')
    const own = await central.psql("SET ROLE lab_reader; SELECT set_config('bkg.namespace', 'lab', false); SELECT count(*) FROM bkg.events")
    expect(own.split('\n').at(-1)).toBe('6000')
  })

  it('psql reaches the embedded database through the node\'s socket; nobody else does', async () => {
    const socketDir = join(node.paths.dir, 'psql')
    const result = await psqlAt(socketDir, "SELECT count(*) FROM bkg.events WHERE namespace = 'lab'")
    expect(result.stderr).toBe('')
    expect(result.stdout).toBe('6000')
    const status = (await node.api('GET', '/api/v1/admin/db')).body
    expect(status.psql).toContain(socketDir)
    const other = spawn('runuser', ['-u', 'nobody', '--', 'psql', `host=${socketDir} port=5432 user=postgres dbname=postgres`, '-c', 'select 1'])
    const code = await new Promise((resolve) => other.on('close', resolve))
    expect(code).not.toBe(0)
  })

  it('--sync-changes: a node takes in events that reach it only through the central database', async () => {
    // not connected to the synced node: no gossip, no catch-up between them
    const island = await mesh.addNode('island', { namespaces: ['lab'] })
    await island.start(['--sync', central.url, '--sync-changes'])
    try {
      await waitFor('change stream running', async () => (await island.api('GET', '/api/v1/admin/db')).body.changes?.state === 'streaming', 30_000, 250)
      const sent = await node.api('POST', '/api/v1/events', { namespace: 'lab', type: 'via-central', payload: { hello: 'island' } })
      expect(sent.status).toBe(201)
      const arrived = await waitFor('event on the island', async () => {
        const { body } = await island.api('GET', '/api/v1/events?namespace=lab&type=via-central')
        return body.events.length > 0 ? body.events[0] : undefined
      }, 30_000, 250)
      // stored as the origin signed it, after checking it with the origin's certificate from the central table
      expect(arrived).toMatchObject({ id: sent.body.id, origin: node.peerId, sig: sent.body.sig })
      expect((await island.api('GET', '/api/v1/peers?ping=false')).body).toEqual([])
    } finally {
      await island.stop()
    }
  })
})
