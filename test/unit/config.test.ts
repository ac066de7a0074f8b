import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, configFromEnv, readConfigFile, resolveConfig, splitList } from '../../node/config/index.ts'

function configError (fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).code).toBe('config_invalid')
    return err as ConfigError
  }
  throw new Error('expected a ConfigError, nothing was thrown')
}

describe('resolveConfig', () => {
  it('fills every default when given nothing', () => {
    const config = resolveConfig()
    expect(config.listen).toEqual(['/ip4/0.0.0.0/tcp/4001'])
    expect(config.announce).toEqual([])
    expect(config.api).toBe('127.0.0.1:7070')
    expect(config.bootstrap).toEqual([])
    expect(config.bootstrapFile).toBeUndefined()
    expect(config.name).toBeUndefined()
    expect(config.upnp).toBe(false)
    expect(config.autonat).toBe(true)
    expect(config.logLevel).toBe('info')
    expect(config.admission).toEqual({ timeoutMs: 5000, rejectCooldownMs: 60_000, recheckIntervalMs: 60_000 })
    expect(config.connections).toEqual({ max: 300, maxPendingInbound: 64, inboundPerSecondPerHost: 50, maxStreamsPerProtocol: 64 })
    expect(config.relay).toEqual({ server: 'auto', reserve: false, maxReservations: 128, durationLimitMs: 0, dataLimitBytes: 0 })
    expect(config.http).toEqual({ rateLimit: 1200 })
  })

  it('lets later sources win: file < env < flags', () => {
    const file = { api: '127.0.0.1:1111', logLevel: 'debug', name: 'from-file', listen: ['/ip4/127.0.0.1/tcp/1'] }
    const env = configFromEnv({ BKG_API: '127.0.0.1:2222', BKG_LOG_LEVEL: 'warn' })
    const flags = { api: '127.0.0.1:3333', logLevel: undefined, name: undefined }
    const config = resolveConfig(file, env, flags)
    expect(config.api).toBe('127.0.0.1:3333')
    // an undefined flag does not erase a lower source
    expect(config.logLevel).toBe('warn')
    expect(config.name).toBe('from-file')
    expect(config.listen).toEqual(['/ip4/127.0.0.1/tcp/1'])
    // without the flag, the environment wins over the file
    expect(resolveConfig(file, env).api).toBe('127.0.0.1:2222')
    expect(resolveConfig(file).api).toBe('127.0.0.1:1111')
  })

  it('merges nested groups key by key instead of replacing them', () => {
    const config = resolveConfig(
      { admission: { timeoutMs: 1000 }, http: { rateLimit: 5 } },
      { admission: { rejectCooldownMs: 7 } }
    )
    expect(config.admission).toEqual({ timeoutMs: 1000, rejectCooldownMs: 7, recheckIntervalMs: 60_000 })
    expect(config.http.rateLimit).toBe(5)
  })

  it('replaces lists rather than concatenating them', () => {
    const config = resolveConfig({ bootstrap: ['/ip4/10.0.0.1/tcp/1'] }, { bootstrap: ['/ip4/10.0.0.2/tcp/2'] })
    expect(config.bootstrap).toEqual(['/ip4/10.0.0.2/tcp/2'])
  })

  it('rejects an invalid multiaddr and names the field', () => {
    const err = configError(() => resolveConfig({ listen: ['notamultiaddr'] }))
    expect(err.message).toMatch(/listen\[0\]/)
    expect(err.message).toMatch(/multiaddr/)
    expect(configError(() => resolveConfig({ bootstrap: ['/ip4/1.2.3.4/tcp/1', '/nope/x'] })).message).toMatch(/bootstrap\[1\]/)
    expect(configError(() => resolveConfig({ announce: ['hello'] })).message).toMatch(/announce\[0\]/)
  })

  it('rejects an empty listen list', () => {
    expect(configError(() => resolveConfig({ listen: [] })).message).toMatch(/listen/)
  })

  it('rejects a malformed api HOST:PORT and names the field', () => {
    for (const api of ['nope', '127.0.0.1', '127.0.0.1:99999', 'host:port', ':7070', '127.0.0.1:7070/x']) {
      const err = configError(() => resolveConfig({ api }))
      expect(err.message, api).toMatch(/\bapi\b/)
    }
    expect(resolveConfig({ api: '[::1]:0' }).api).toBe('[::1]:0')
    expect(resolveConfig({ api: 'localhost:65535' }).api).toBe('localhost:65535')
  })

  it('rejects an unknown log level and names the field', () => {
    const err = configError(() => resolveConfig({ logLevel: 'loud' }))
    expect(err.message).toMatch(/logLevel/)
  })

  it('rejects out-of-range tuning values and names the nested field', () => {
    expect(configError(() => resolveConfig({ http: { rateLimit: 0 } })).message).toMatch(/http\.rateLimit/)
    expect(configError(() => resolveConfig({ admission: { timeoutMs: 10 } })).message).toMatch(/admission\.timeoutMs/)
    expect(configError(() => resolveConfig({ relay: { server: 'sometimes' } })).message).toMatch(/relay\.server/)
  })

  it('rejects unknown top-level keys (strict)', () => {
    const err = configError(() => resolveConfig({ lisen: ['/ip4/127.0.0.1/tcp/1'] }))
    expect(err.message).toMatch(/lisen/)
  })

  it('rejects unknown keys inside the tuning groups', () => {
    expect(configError(() => resolveConfig({ http: { ratelimit: 5 } })).message).toMatch(/ratelimit/)
    expect(configError(() => resolveConfig({ relay: { sever: true } })).message).toMatch(/sever/)
  })

  it('rejects values of the wrong type', () => {
    expect(configError(() => resolveConfig({ upnp: 'yes' })).message).toMatch(/upnp/)
    expect(configError(() => resolveConfig({ listen: '/ip4/127.0.0.1/tcp/1' })).message).toMatch(/listen/)
  })
})

describe('configFromEnv', () => {
  it('maps BKG_* variables, splits lists and ignores empty values', () => {
    const out = configFromEnv({
      BKG_NAME: 'alpha',
      BKG_LISTEN: '/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2,,',
      BKG_BOOTSTRAP: '',
      BKG_API: '127.0.0.1:9',
      BKG_LOG_LEVEL: 'debug',
      UNRELATED: 'x'
    })
    expect(out).toEqual({
      name: 'alpha',
      listen: ['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.1/tcp/2'],
      api: '127.0.0.1:9',
      logLevel: 'debug'
    })
  })

  it('parses BKG_UPNP booleans', () => {
    for (const yes of ['1', 'true', 'YES', 'on']) expect(configFromEnv({ BKG_UPNP: yes }).upnp).toBe(true)
    for (const no of ['0', 'false', 'No', 'off']) expect(configFromEnv({ BKG_UPNP: no }).upnp).toBe(false)
  })

  it('refuses BKG_UPNP=maybe with a ConfigError naming the variable', () => {
    const err = configError(() => configFromEnv({ BKG_UPNP: 'maybe' }))
    expect(err.message).toMatch(/BKG_UPNP/)
    expect(err.message).toMatch(/maybe/)
  })

  it('leaves invalid values to resolveConfig, which names the field', () => {
    const env = configFromEnv({ BKG_LISTEN: 'garbage' })
    expect(configError(() => resolveConfig(env)).message).toMatch(/listen\[0\]/)
  })
})

describe('splitList', () => {
  it('trims and drops empty items', () => {
    expect(splitList(' a ,b,, c ,')).toEqual(['a', 'b', 'c'])
    expect(splitList('')).toEqual([])
    expect(splitList(' , ')).toEqual([])
  })
})

describe('readConfigFile', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'bkg-config-test-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads a JSON object', async () => {
    const path = join(dir, 'ok.json')
    await writeFile(path, JSON.stringify({ http: { rateLimit: 5 }, name: 'x' }))
    expect(await readConfigFile(path, true)).toEqual({ http: { rateLimit: 5 }, name: 'x' })
  })

  it('returns {} for a missing optional file', async () => {
    expect(await readConfigFile(join(dir, 'missing.json'), false)).toEqual({})
  })

  it('refuses a missing required file', async () => {
    const path = join(dir, 'missing-required.json')
    const err = await readConfigFile(path, true).then(() => null, (e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toContain(path)
  })

  it('refuses a file that is not JSON', async () => {
    const path = join(dir, 'bad.json')
    await writeFile(path, '{ listen: nope')
    const err = await readConfigFile(path, false).then(() => null, (e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toContain(path)
  })

  it('refuses JSON that is not an object', async () => {
    for (const [name, text] of [['array.json', '[1, 2]'], ['null.json', 'null'], ['number.json', '42'], ['string.json', '"x"']]) {
      const path = join(dir, name)
      await writeFile(path, text)
      const err = await readConfigFile(path, false).then(() => null, (e: unknown) => e)
      expect(err, name).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toMatch(/not a JSON object/)
    }
  })
})
