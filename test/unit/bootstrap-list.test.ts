import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BootstrapListError, formatBootstrapList, parseBootstrapList, readBootstrapList } from '../../bootstrap/list.ts'

const PEER = '12D3KooWM7xXJ5raobin2Rs47z76xaiTAbetaG3Xsjw9VgrYgyW9'

describe('parseBootstrapList', () => {
  it('reads one multiaddr per line, skipping comments and blank lines', () => {
    const text = [
      '# BKG bootstrap list',
      '',
      `/ip4/10.0.0.5/tcp/4001/p2p/${PEER}`,
      '   /dns4/boot.example.org/tcp/4001   # trailing comment',
      '\t',
      '/ip6/::1/tcp/4002'
    ].join('\r\n')
    const addrs = parseBootstrapList(text).map(String)
    expect(addrs).toEqual([`/ip4/10.0.0.5/tcp/4001/p2p/${PEER}`, '/dns4/boot.example.org/tcp/4001', '/ip6/::1/tcp/4002'])
  })

  it('returns nothing for an empty or comment-only list', () => {
    expect(parseBootstrapList('')).toEqual([])
    expect(parseBootstrapList('# nothing\n\n   # here\n')).toEqual([])
  })

  it('names the source and line of a bad entry', () => {
    const text = '/ip4/10.0.0.5/tcp/4001\n# ok\nnot-a-multiaddr\n'
    let caught: unknown
    try {
      parseBootstrapList(text, 'boot.txt')
    } catch (err) {
      caught = err
    }
    expect(caught).toBeInstanceOf(BootstrapListError)
    expect((caught as BootstrapListError).code).toBe('bootstrap_list_invalid')
    expect((caught as Error).message).toContain('boot.txt:3')
    expect((caught as Error).message).toContain('not-a-multiaddr')
  })

  it('round-trips through formatBootstrapList', () => {
    const addrs = [`/ip4/10.0.0.5/tcp/4001/p2p/${PEER}`, '/ip4/127.0.0.1/tcp/1']
    const text = formatBootstrapList(addrs)
    expect(text.startsWith('#')).toBe(true)
    expect(parseBootstrapList(text).map(String)).toEqual(addrs)
  })
})

describe('readBootstrapList', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'bkg-bootstrap-test-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads a file', async () => {
    const path = join(dir, 'list.txt')
    await writeFile(path, formatBootstrapList(['/ip4/127.0.0.1/tcp/9']))
    expect((await readBootstrapList(path, true)).map(String)).toEqual(['/ip4/127.0.0.1/tcp/9'])
  })

  it('treats a missing optional file as empty and a missing required file as an error', async () => {
    const path = join(dir, 'missing.txt')
    expect(await readBootstrapList(path, false)).toEqual([])
    await expect(readBootstrapList(path, true)).rejects.toThrow(BootstrapListError)
  })

  it('reports the file path of a bad line', async () => {
    const path = join(dir, 'bad.txt')
    await writeFile(path, 'garbage\n')
    await expect(readBootstrapList(path, false)).rejects.toThrow(`${path}:1`)
  })
})
