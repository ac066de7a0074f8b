// Child process of bench/model-pull.ts: a stock Helia node (bitswap over TCP, Noise, Yamux) that
// imports N MiB of random bytes as the same UnixFS DAG our nodes build for a model file, prints
// `<multiaddr> <root CID> <sha256>` on one stdout line and serves the blocks until SIGTERM.
// Usage: bitswap-peer.ts <bytes>
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight, type HeliaWithLibp2p } from '@helia/libp2p'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { FsBlockstore } from 'blockstore-fs'
import { createHeliaLight } from 'helia'
import { importByteStream } from 'ipfs-unixfs-importer'
import { referenceImporterOptions } from '../test/models/helpers.ts'

/** the chunk size of the DAG (1 MiB leaves, like a default `bkg model pack`) */
export const BITSWAP_CHUNK_SIZE = 1024 * 1024

export interface BenchHelia {
  helia: HeliaWithLibp2p<{ identify: ReturnType<ReturnType<typeof identify>> }>
  blocks: FsBlockstore
  /** stops Helia, closes the blockstore and removes its directory */
  stop: () => Promise<void>
}

/**
 * A stock Helia 7 node kept off the public network: `createHeliaLight` + `withLibp2pLight` (the
 * libp2p config is used as given; `withLibp2p` would merge in `libp2pDefaults()`: bootstrap list,
 * DHT, autoTLS, UPnP, delegated routing) + `withBitswap`, no HTTP gateways (`createHelia` adds
 * `withHTTP`). Blocks live in blockstore-fs in a fresh temp dir, as in our nodes' model store.
 * identify is the only service: bitswap learns that a peer speaks bitswap from a registrar
 * topology, which fires only after identify.
 */
export async function createBenchHelia (listen: string[]): Promise<BenchHelia> {
  const dir = await mkdtemp(join(tmpdir(), 'bkg-bench-helia-'))
  const blocks = new FsBlockstore(join(dir, 'blocks'))
  try {
    await blocks.open()
    const helia = withBitswap(withLibp2pLight(createHeliaLight({ blockstore: blocks }), {
      addresses: { listen },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      peerDiscovery: [],
      services: { identify: identify() }
    }))
    await helia.start()
    return {
      helia,
      blocks,
      stop: async () => {
        await helia.stop().catch(() => {})
        await blocks.close().catch(() => {})
        await rm(dir, { recursive: true, force: true })
      }
    }
  } catch (err) {
    await blocks.close().catch(() => {})
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const bytes = Number(process.argv[2])
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`usage: bitswap-peer.ts <bytes>, got ${process.argv[2]}`)
  const node = await createBenchHelia(['/ip4/127.0.0.1/tcp/0'])
  let stopping = false
  const stop = (code: number): void => {
    if (stopping) return
    stopping = true
    void node.stop().finally(() => process.exit(code))
  }
  process.on('SIGTERM', () => stop(0))
  try {
    const hash = createHash('sha256')
    async function * content (): AsyncGenerator<Uint8Array> {
      for (let written = 0; written < bytes; written += BITSWAP_CHUNK_SIZE) {
        const chunk = randomBytes(Math.min(BITSWAP_CHUNK_SIZE, bytes - written))
        hash.update(chunk)
        yield chunk
      }
    }
    // through Helia's blockstore, as a stock Helia user adds content
    const { cid } = await importByteStream(content(), node.helia.blockstore, referenceImporterOptions(BITSWAP_CHUNK_SIZE))
    console.log(`${node.helia.libp2p.getMultiaddrs()[0].toString()} ${cid.toString()} ${hash.digest('hex')}`)
  } catch (err) {
    console.error(`bitswap-peer: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    stop(1)
  }
}
