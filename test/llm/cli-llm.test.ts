/**
 * `bkg llm …` against the node's API server with a fake LLM service (`--api`, `--token`): chat
 * streaming to stdout as pieces arrive, its flags, refusals; embed, ls, load, unload; test-model.
 */
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { CLI_ENTRY } from '../../node/devnet/index.ts'
import { cliEnv, expectCleanFailure, runBkg } from '../helpers/cli.ts'
import { tempDir } from '../helpers/mesh.ts'
import { FAKE_MODEL, FAKE_PEER, fakeVector, startFakeApi, until, type FakeApi, resetFake } from './api-fake.ts'

let fake: FakeApi
let tmp: Awaited<ReturnType<typeof tempDir>>
beforeAll(async () => {
  fake = await startFakeApi()
  tmp = await tempDir('bkg-llm-cli-')
})
afterAll(async () => {
  await fake.close()
  await tmp.remove()
})
beforeEach(() => {
  resetFake(fake)
})

const target = (token = fake.admin): string[] => ['--api', fake.url, '--token', token]

describe('bkg llm chat', () => {
  it('prints the answer on stdout and who served it on stderr; flags reach the request', async () => {
    const schema = join(tmp.dir, 'schema.json')
    await writeFile(schema, JSON.stringify({ type: 'object', properties: { name: { type: 'string', maxLength: 8 } } }))
    const run = await runBkg(['llm', 'chat', FAKE_MODEL, 'hello there', '--system', 'be brief', '--max-tokens', '3', '--temperature', '0', '--seed', '9', ...target(fake.token)], tmp.dir)
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toBe('t0 t1 t2 \n')
    expect(run.stderr).toMatch(new RegExp(`^served by ${FAKE_PEER}: ${FAKE_MODEL} \\(sha256 abababababab…\\) on fake@1 \\(cpu\\); 7 prompt \\+ 3 generated tokens, finish length`))
    expect(fake.llm.calls[0].request).toMatchObject({
      model: FAKE_MODEL,
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there' }],
      maxTokens: 3,
      temperature: 0,
      seed: 9,
      placement: 'auto'
    })
    const json = await runBkg(['llm', 'chat', 'default', 'json please', '--json-schema', schema, ...target()], tmp.dir)
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual({ name: 'ab', n: 2 })
    expect(fake.llm.calls[1].request).toMatchObject({ responseFormat: { type: 'json_schema', name: 'answer', schema: { type: 'object' } } })
    expect(fake.llm.calls[1].request.model).toBeUndefined()
  })

  it('streams: pieces are on stdout before the chat has ended', async () => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => { release = resolve })
    fake.llm.script.pace = async () => { if (fake.llm.calls[0].produced >= 2) await gate }
    const child = spawn(process.execPath, [CLI_ENTRY, 'llm', 'chat', FAKE_MODEL, 'hi', ...target()], { cwd: tmp.dir, env: cliEnv(tmp.dir), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve))
    await until(() => stdout === 't0 t1 ', 'the first pieces on stdout', 30_000)
    expect(fake.llm.calls[0].finished).toBe(false)
    release()
    expect(await exited).toBe(0)
    expect(stdout).toBe('t0 t1 t2 t3 t4 \n')
  })

  it('refusals: a busy node, an unknown model, a bad model name, an unreadable schema', async () => {
    fake.llm.script.busy = 6
    expectCleanFailure(await runBkg(['llm', 'chat', FAKE_MODEL, 'x', ...target()], tmp.dir), /node refused \(429 llm_busy\): every slot .* \(retry in 6 s\)/, { singleLine: true })
    fake.llm.script.busy = null
    expectCleanFailure(await runBkg(['llm', 'chat', 'nope@1.0.0', 'x', ...target()], tmp.dir), /404 model_not_found/, { singleLine: true })
    expectCleanFailure(await runBkg(['llm', 'chat', 'nope', 'x', ...target()], tmp.dir), /not a model: NAME@VERSION/, { exitCode: 2, singleLine: true })
    expectCleanFailure(await runBkg(['llm', 'chat', FAKE_MODEL, 'x', '--json-schema', join(tmp.dir, 'missing.json'), ...target()], tmp.dir), /cannot read the JSON schema .*no such file/, { singleLine: true })
    expectCleanFailure(await runBkg(['llm', 'chat', FAKE_MODEL, 'x', '--temperature', 'hot', ...target()], tmp.dir), /"hot" is not a number/, { exitCode: 2 })
    fake.llm.script.failAfter = 1
    const failed = await runBkg(['llm', 'chat', FAKE_MODEL, 'x', ...target()], tmp.dir)
    expect(failed.stdout).toBe('t0 ')
    expectCleanFailure(failed, /the chat failed \(llm_failed\): the backend failed mid-stream/)
    expectCleanFailure(await runBkg(['llm', 'chat', FAKE_MODEL, 'x', '--api', 'http://127.0.0.1:1', '--token', 't'], tmp.dir), /cannot reach the node/, { singleLine: true })
  })
})

describe('bkg llm embed, ls, load, unload', () => {
  it('embed prints the result as JSON', async () => {
    const run = await runBkg(['llm', 'embed', FAKE_MODEL, 'hello', ...target(fake.token)], tmp.dir)
    expect(run.code, run.stderr).toBe(0)
    expect(JSON.parse(run.stdout)).toMatchObject({ model: FAKE_MODEL, dimensions: 8, embeddings: [fakeVector('hello')], served_by: FAKE_PEER })
  })

  it('ls shows held and mesh models; load --default, unload', async () => {
    const ls = await runBkg(['llm', 'ls', ...target()], tmp.dir)
    expect(ls.code, ls.stderr).toBe(0)
    expect(ls.stdout).toMatch(/^MODEL\s+STATE\s+SIZE\s+SLOTS\s+ARCH\s+SHA256\n/)
    expect(ls.stdout).toMatch(/tiny@1\.0\.0\s+loaded, default\s+0\.4 MiB\s+0\/4\s+llama\s+abababababab/)
    expect(ls.stdout).toMatch(/other@2\.0\.0\s+held\s+/)
    expect(ls.stdout).toMatch(/served by peers:\nMODEL\s+PEER\s+SLOTS\s+LATENCY\s+SEEN\nremote@3\.0\.0\s+12D3KooWOtherPeer\s+1\/4\s+3 ms/)
    expectCleanFailure(await runBkg(['llm', 'ls', ...target(fake.token)], tmp.dir), /403 forbidden/, { singleLine: true })

    const load = await runBkg(['llm', 'load', 'other@2.0.0', '--default', ...target()], tmp.dir)
    expect(load.code, load.stderr).toBe(0)
    expect(load.stdout).toBe('other@2.0.0 loaded (llama, context 1024; 0/4 slots), default\n')
    expect(fake.llm.defaultModel()).toBe('other@2.0.0')
    const unload = await runBkg(['llm', 'unload', 'other@2.0.0', ...target()], tmp.dir)
    expect(unload.stdout).toBe('other@2.0.0 unloaded\n')
    expectCleanFailure(await runBkg(['llm', 'unload', 'other@2.0.0', ...target()], tmp.dir), /409 model_not_loaded/, { singleLine: true })
    fake.llm.setDefault(FAKE_MODEL)
  })
})

describe('bkg llm test-model', () => {
  it('writes the same GGUF for the same seed, another for another seed; --f32 is larger', async () => {
    const paths = ['a.gguf', 'b.gguf', 'c.gguf', 'd.gguf'].map((name) => join(tmp.dir, name))
    for (const [path, args] of [[paths[0], []], [paths[1], []], [paths[2], ['--seed', '7']], [paths[3], ['--f32']]] as const) {
      const run = await runBkg(['llm', 'test-model', '--out', path, ...args], tmp.dir)
      expect(run.code, run.stderr).toBe(0)
      expect(run.stdout).toMatch(/bytes \(seed \d+, f(16|32)\)\n$/)
    }
    const [a, b, c, d] = await Promise.all(paths.map(async (path) => await readFile(path)))
    expect(a.subarray(0, 4).toString('latin1')).toBe('GGUF')
    expect(a.equals(b)).toBe(true)
    expect(a.equals(c)).toBe(false)
    expect(d.length).toBeGreaterThan(a.length)
    expectCleanFailure(await runBkg(['llm', 'test-model'], tmp.dir), /--out/, { exitCode: 2 })
  })
})
