/*
 * The entry of a sandbox worker: one guest of one language, serving one request at a time
 * from the main thread (guest-worker.ts). A run's output goes out as it is written; its
 * outcome follows. In quick mode the guest is reset right after it answers, before it reads the
 * next message, so it is never reused dirty.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { BkgError } from '../../../lib/bkg-error.ts'
import { GuestIO } from './guest-io.ts'
import type { CreateRunner, GuestRunner } from './runner.ts'
import type { FromWorker, ToWorker, WorkerError, WorkerInit } from './worker-protocol.ts'

/** one line per language: the runner's file is loaded only in workers of that language */
const RUNNERS: Partial<Record<WorkerInit['language'], () => Promise<{ createRunner: CreateRunner }>>> = {
  js: async () => await import('./js-runner.ts'),
  wasm: async () => await import('./wasi-runner.ts'),
  python: async () => await import('./python-runner.ts')
}

const port = parentPort
if (port === null) throw new Error('worker-main.ts runs in a worker thread')
const init = workerData as WorkerInit
const control = new Int32Array(init.control)

function post (message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(message, transfer)
}

function toWorkerError (error: unknown): WorkerError {
  if (error instanceof BkgError) return { name: error.name, message: error.message, code: error.code, status: error.status }
  const message = error instanceof Error ? error.message : String(error)
  return { name: error instanceof Error ? error.name : 'Error', message: message.split('\n')[0].slice(0, 500) }
}

function cpuMicros (): number {
  const usage = process.threadCpuUsage()
  return usage.user + usage.system
}

async function serve (runner: GuestRunner, message: ToWorker): Promise<void> {
  if (message.type === 'image') {
    const image = runner.image()
    post({ type: 'image', image }, image.memory !== null ? [image.memory.buffer as ArrayBuffer] : [])
    return
  }
  if (message.type === 'restore') {
    await runner.restore(message.image)
    post({ type: 'restored' })
    return
  }
  const startCpu = cpuMicros()
  post({ type: 'started', cpuMicros: startCpu })
  const io = new GuestIO(message.job, control, post)
  let result
  try {
    result = await runner.run(message.job, io)
  } catch (error) {
    // a refused request (BkgError) changed nothing worth keeping; a quick guest is reset all the same
    const refused = error instanceof BkgError && (init.mode === 'persistent' || runner.reset())
    post({ type: 'failed', error: toWorkerError(error), recycle: !refused })
    return
  }
  const { recycle, ...outcome } = result
  outcome.cpuMs = (cpuMicros() - startCpu) / 1000
  post({ type: 'done', outcome, recycle })
  // after answering, so the reset (a copy of the clean heap) is not part of the run's latency;
  // it still happens before the next message is read
  if (init.mode === 'quick' && !recycle && !runner.reset()) process.exit(1)
}

async function main (): Promise<void> {
  const load = RUNNERS[init.language]
  if (load === undefined) throw new BkgError('language_unavailable', 501, `no runner for ${init.language}`)
  const runner = await (await load()).createRunner({ mode: init.mode, memoryBytes: init.memoryBytes, quickjsModule: init.quickjsModule, python: init.python })
  let busy = false
  port?.on('message', (message: ToWorker) => {
    // the main thread sends one request at a time; this guards the guest against a bug there
    if (busy) {
      post({ type: 'failed', error: { name: 'Error', message: 'the worker is busy' }, recycle: true })
      return
    }
    busy = true
    serve(runner, message).catch((error: unknown) => {
      // a refusal (BkgError) leaves the guest as it was; anything else may have broken it
      post({ type: 'failed', error: toWorkerError(error), recycle: !(error instanceof BkgError) })
    }).finally(() => { busy = false })
  })
  post({ type: 'ready' })
}

main().catch((error: unknown) => { post({ type: 'failed-to-start', error: toWorkerError(error) }) })
