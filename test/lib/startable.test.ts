import { describe, expect, it } from 'vitest'
import { LifecycleError, startAll, stopAll, type Startable } from '../../lib/startable.ts'

function recorder (): { log: string[], service: (name: string, fail?: 'start' | 'stop') => Startable } {
  const log: string[] = []
  return {
    log,
    service: (name, fail) => ({
      beforeStart () { log.push(`${name}.beforeStart`) },
      async start () {
        await Promise.resolve()
        if (fail === 'start') throw new Error(`${name} will not start`)
        log.push(`${name}.start`)
      },
      afterStart () { log.push(`${name}.afterStart`) },
      stop () {
        if (fail === 'stop') throw new Error(`${name} will not stop`)
        log.push(`${name}.stop`)
      }
    })
  }
}

describe('startAll / stopAll', () => {
  it('starts in order with hooks around all, stops in reverse, and skips what is not startable', async () => {
    const { log, service } = recorder()
    const started = await startAll([['a', service('a')], ['config', { port: 1 }], ['b', service('b')]])
    expect(log).toEqual(['a.beforeStart', 'b.beforeStart', 'a.start', 'b.start', 'a.afterStart', 'b.afterStart'])
    log.length = 0
    expect(await stopAll(started)).toEqual([])
    expect(log).toEqual(['b.stop', 'a.stop'])
  })

  it('a failed start stops what already started and names the service', async () => {
    const { log, service } = recorder()
    const failure = await startAll([['a', service('a')], ['b', service('b', 'start')], ['c', service('c')]]).catch((err: unknown) => err)
    expect(failure).toBeInstanceOf(LifecycleError)
    expect((failure as LifecycleError).service).toBe('b')
    expect((failure as Error).message).toMatch(/^b: start failed: b will not start/)
    expect(log).toEqual(['a.beforeStart', 'b.beforeStart', 'c.beforeStart', 'a.start', 'a.stop'])
  })

  it('every service is stopped even when one throws; the failures are returned', async () => {
    const { log, service } = recorder()
    const started = await startAll([['a', service('a')], ['b', service('b', 'stop')], ['c', service('c')]])
    log.length = 0
    const failures = await stopAll(started)
    expect(log).toEqual(['c.stop', 'a.stop'])
    expect(failures.map((f) => [f.service, f.message])).toEqual([['b', 'b: stop failed: b will not stop']])
  })
})

describe('startAll with a refusal BKG names', () => {
  it('passes a BkgError on unchanged (its message already says what to do)', async () => {
    const { BkgError } = await import('../../lib/bkg-error.ts')
    const refusal = new BkgError('address_in_use', 500, 'API address 127.0.0.1:7070 is in use')
    const failure = await startAll([['api', { start () { throw refusal }, stop () {} }]]).catch((err: unknown) => err)
    expect(failure).toBe(refusal)
  })
})
