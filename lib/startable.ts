/**
 * The lifecycle every BKG service has, after js-libp2p's `Startable`: `start` and `stop`, with
 * optional hooks that run for all services before and after. Services start in the order they
 * are listed and stop in the reverse order; every service is stopped even when another throws.
 *
 * @example
 * const started = await startAll([['db', db], ['events', events]])   // events may use db in start()
 * const failures = await stopAll(started)                          // events stops first, then db
 */
import { BkgError } from './bkg-error.ts'

export interface Startable {
  beforeStart?: () => void | Promise<void>
  start: () => void | Promise<void>
  afterStart?: () => void | Promise<void>
  beforeStop?: () => void | Promise<void>
  stop: () => void | Promise<void>
  afterStop?: () => void | Promise<void>
}

export type Named<T> = ReadonlyArray<readonly [name: string, service: T]>

export function isStartable (value: unknown): value is Startable {
  return value != null && typeof (value as Startable).start === 'function' && typeof (value as Startable).stop === 'function'
}

/** A service that failed to start or stop, with its name. */
export class LifecycleError extends Error {
  readonly service: string
  constructor (service: string, phase: string, cause: unknown) {
    super(`${service}: ${phase} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    this.name = 'LifecycleError'
    this.service = service
  }
}

/**
 * Starts the startable services in order (each after every `beforeStart`, each `afterStart`
 * after every `start`). When one fails, those already started are stopped again (in reverse)
 * and the failure is thrown: a node never stays half up. Resolves with the services started,
 * which is what `stopAll` takes.
 */
export async function startAll (services: Named<unknown>): Promise<Named<Startable>> {
  const startables = services.filter((entry): entry is readonly [string, Startable] => isStartable(entry[1]))
  const started: Array<readonly [string, Startable]> = []
  try {
    for (const [name, service] of startables) await run(name, 'beforeStart', service.beforeStart?.bind(service))
    for (const entry of startables) {
      await run(entry[0], 'start', entry[1].start.bind(entry[1]))
      started.push(entry)
    }
    for (const [name, service] of startables) await run(name, 'afterStart', service.afterStart?.bind(service))
  } catch (err) {
    await stopAll(started)
    throw err
  }
  return started
}

/**
 * Stops the services in reverse order. Every service is stopped whatever the others do; the
 * failures are returned (as LifecycleErrors naming the service) for the caller to log.
 */
export async function stopAll (services: Named<Startable>): Promise<LifecycleError[]> {
  const failures: LifecycleError[] = []
  const reversed = [...services].reverse()
  const attempt = async (name: string, phase: string, fn: (() => void | Promise<void>) | undefined): Promise<void> => {
    try {
      await run(name, phase, fn, false)
    } catch (err) {
      failures.push(err as LifecycleError)
    }
  }
  for (const [name, service] of reversed) await attempt(name, 'beforeStop', service.beforeStop?.bind(service))
  for (const [name, service] of reversed) await attempt(name, 'stop', service.stop.bind(service))
  for (const [name, service] of reversed) await attempt(name, 'afterStop', service.afterStop?.bind(service))
  return failures
}

async function run (name: string, phase: string, fn: (() => void | Promise<void>) | undefined, starting = true): Promise<void> {
  if (fn == null) return
  try {
    await fn()
  } catch (err) {
    // a BkgError already says what to do (a busy port, a missing certificate): it goes on as it is
    if (err instanceof LifecycleError || (err instanceof BkgError && starting)) throw err
    throw new LifecycleError(name, phase, err)
  }
}
