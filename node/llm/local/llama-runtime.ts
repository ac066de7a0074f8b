import { readFile } from 'node:fs/promises'
import type { Llama } from 'node-llama-cpp'

export interface LlamaRuntimeInit {
  /** 'auto' uses a GPU build when one is installed and a GPU is present; false keeps to the CPU */
  gpu: 'auto' | false
  /** the most CPU threads any context may use */
  maxThreads: number
}

/**
 * node-llama-cpp's native addon, loaded once and only when a model is first loaded: loading it
 * costs ~0.6 s and ~30 MiB, which a node that never runs inference should not pay.
 */
export class LlamaRuntime {
  private readonly init: LlamaRuntimeInit
  private loading?: Promise<Llama>
  private label = 'node-llama-cpp'

  constructor (init: LlamaRuntimeInit) {
    this.init = init
  }

  async llama (): Promise<Llama> {
    this.loading ??= this.load()
    try {
      return await this.loading
    } catch (err) {
      this.loading = undefined
      throw err
    }
  }

  /** 'node-llama-cpp@3.21.1 (cpu)': named in every response as the backend that ran it */
  get backend (): string {
    return this.label
  }

  private async load (): Promise<Llama> {
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp')
    // never compile llama.cpp on a node: a prebuilt binary or nothing
    const llama = await getLlama({ gpu: this.init.gpu, build: 'never', maxThreads: this.init.maxThreads, logLevel: LlamaLogLevel.error, progressLogs: false })
    const version = await packageVersion()
    this.label = `node-llama-cpp@${version} (${llama.gpu === false ? 'cpu' : llama.gpu})`
    return llama
  }

  async stop (): Promise<void> {
    const loading = this.loading
    this.loading = undefined
    if (loading == null) return
    const llama = await loading.catch(() => null)
    await llama?.dispose()
  }
}

async function packageVersion (): Promise<string> {
  const manifest = new URL('package.json', new URL('..', import.meta.resolve('node-llama-cpp')))
  return (JSON.parse(await readFile(manifest, 'utf8')) as { version: string }).version
}
