import type { BlobBackend, ByteRange, Locator } from './blob-backend.ts'

/**
 * A backend whose implementation is built on first need: the service loads it in `start()`, so a
 * module that is costly to load (the AWS SDK) is loaded only by a node configured to use it, while
 * the object store can list the backend from the moment the service is built.
 */
export class LazyBackend<B extends BlobBackend> implements BlobBackend {
  readonly name: string
  private readonly create: () => Promise<B>
  private loading: Promise<B> | undefined

  constructor (name: string, create: () => Promise<B>) {
    this.name = name
    this.create = create
  }

  /** Builds the backend once; a failed build is tried again on the next call. */
  async load (): Promise<B> {
    this.loading ??= this.create().catch((err: unknown) => {
      this.loading = undefined
      throw err
    })
    return await this.loading
  }

  /** the backend if it was built (or is being built), without building it */
  async built (): Promise<B | undefined> {
    return await this.loading?.catch(() => undefined)
  }

  async write (source: AsyncIterable<Uint8Array>): Promise<{ locator: Locator, size: number }> {
    return await (await this.load()).write(source)
  }

  async * read (locator: Locator, range?: ByteRange): AsyncIterable<Uint8Array> {
    yield * (await this.load()).read(locator, range)
  }

  async remove (locator: Locator): Promise<void> {
    await (await this.load()).remove(locator)
  }
}
