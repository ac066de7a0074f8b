import { randomBytes } from 'node:crypto'
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { PeerId, Stream } from '@libp2p/interface'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream, streamPair } from '@libp2p/utils'
import type { CID } from 'multiformats/cid'
import pino from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startAll, stopAll } from '../../lib/startable.ts'
import { packModel } from '../../node/model-packages/index.ts'
import { modelService, type ModelService, type ModelServiceComponents, type ModelServiceInit } from '../../node/models/index.ts'
import { decodeWantList, encodeBlockFrame, MAX_FRAME_BYTES } from '../../protocols/blocks.ts'
import { BLOCKS_PROTOCOL, MODELS_TOPIC } from '../../protocols/ids.ts'
import { tempDir } from '../helpers/mesh.ts'
import { FakeGossipsub, makePeerId, signedMessage } from '../pubsub/fake-gossipsub.ts'
import { makeCa, makeIdentity, type Identity } from './helpers.ts'

/**
 * The model service on fake components: a few in-memory "hosts" whose streams are real
 * length-prefixed libp2p stream pairs (@libp2p/utils' streamPair), a DHT that is a map of
 * provider records, gossipsub in memory. Publishing, serving, pulling, the catalog's checks and
 * the penalty for a bad block run without a libp2p node.
 */

const log = pino({ level: 'silent' })
const MiB = 1024 * 1024

type Handler = (stream: Stream, connection: { remotePeer: PeerId }) => void | Promise<void>

/** The DHT's provider records, shared by every host of a test. */
class FakeDht {
  readonly providers = new Map<string, Set<string>>()
  provided = 0
}

/** One node's host as the model service sees it: stream handlers, dials, connections, events. */
class FakeHost extends EventTarget {
  readonly handlers = new Map<string, Handler>()
  connected: PeerId[] = []
  provideError: Error | null = null
  readonly gossip = new FakeGossipsub()

  readonly peerId: PeerId
  private readonly net: Map<string, FakeHost>
  private readonly dht: FakeDht

  constructor (peerId: PeerId, net: Map<string, FakeHost>, dht: FakeDht) {
    super()
    this.peerId = peerId
    this.net = net
    this.dht = dht
    net.set(peerId.toString(), this)
  }

  async handle (protocol: string, handler: Handler): Promise<void> {
    this.handlers.set(protocol, handler)
  }

  async unhandle (protocol: string): Promise<void> {
    this.handlers.delete(protocol)
  }

  async dialProtocol (peer: PeerId, protocol: string): Promise<Stream> {
    const handler = this.net.get(peer.toString())?.handlers.get(protocol)
    if (handler == null) throw new Error(`${peer.toString()} does not speak ${protocol}`)
    const [outbound, inbound] = await streamPair({ protocol })
    void handler(inbound, { remotePeer: this.peerId })
    return outbound
  }

  getPeers (): PeerId[] {
    return this.connected
  }

  readonly contentRouting = {
    provide: async (cid: CID): Promise<void> => {
      if (this.provideError != null) throw this.provideError
      const key = cid.toString()
      this.dht.providers.set(key, (this.dht.providers.get(key) ?? new Set()).add(this.peerId.toString()))
      this.dht.provided++
    },
    findProviders: async function * (this: void, cid: CID) {
      for (const id of dhtOf(cid)) yield { id: peerIdFromString(id), multiaddrs: [] }
    }
  }

  connect (peer: FakeHost): void {
    this.connected.push(peer.peerId)
    peer.connected.push(this.peerId)
    this.dispatchEvent(new CustomEvent('peer:connect', { detail: peer.peerId }))
    peer.dispatchEvent(new CustomEvent('peer:connect', { detail: this.peerId }))
  }
}

let dhtOf: (cid: CID) => string[] = () => []

describe('model service on fake components', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let publisher: Identity
  let caPem: string
  /** a fresh copy of the package for each publish (publishFile removes the file it was given) */
  let packageCopy: () => Promise<string>
  let net: Map<string, FakeHost>
  let dht: FakeDht
  const services: ModelService[] = []
  const penalties: Array<{ peer: string, reason: string }> = []
  let admitted: Set<string>
  let dirs = 0

  async function node (name: string, init: Partial<ModelServiceInit> = {}): Promise<{ host: FakeHost, models: ModelService }> {
    const host = new FakeHost(await makePeerId(), net, dht)
    const components: ModelServiceComponents = {
      peerId: host.peerId,
      streams: host as unknown as ModelServiceComponents['streams'],
      connections: host,
      events: host as unknown as ModelServiceComponents['events'],
      contentRouting: host.contentRouting as unknown as ModelServiceComponents['contentRouting'],
      pubsub: host.gossip.as(),
      trust: { caPem, crl: null },
      peers: { isAdmitted: (peer) => admitted.has(peer.toString()), denial: () => undefined },
      penalize: (peer, reason) => { penalties.push({ peer: peer.toString(), reason }) },
      log
    }
    const models = modelService({ dir: join(tmp.dir, `${name}-${++dirs}`), ...init })(components)
    services.push(models)
    await startAll([['models', models]])
    return { host, models }
  }

  beforeAll(async () => {
    tmp = await tempDir('bkg-model-service-')
    const ca = await makeCa(tmp.dir, 'Model Operator')
    caPem = ca.caPem
    publisher = await makeIdentity(ca.caDir, tmp.dir, 'pub', ['publisher', 'member'])
    const source = join(tmp.dir, 'weights')
    await mkdir(source)
    // several leaves per file, so a pull asks for more than one block
    await writeFile(join(source, 'weights.bin'), randomBytes(2 * MiB + 4321))
    await writeFile(join(source, 'config.json'), JSON.stringify({ layers: 2 }))
    const pkg = join(tmp.dir, 'tiny-1.0.0.bkg')
    await packModel({
      source,
      name: 'tiny',
      version: '1.0.0',
      architecture: 'test',
      licence: 'MIT',
      chunkSize: 256 * 1024,
      publisher: { certPem: publisher.certPem, keyPem: publisher.keyPem },
      publisherCert: publisher.cert,
      out: pkg
    })
    let copies = 0
    packageCopy = async () => {
      const copy = join(tmp.dir, `copy-${++copies}.bkg`)
      await copyFile(pkg, copy)
      return copy
    }
  }, 60_000)

  afterEach(async () => {
    await stopAll(services.splice(0).map((service) => ['models', service] as const))
    penalties.length = 0
  })

  afterAll(async () => {
    await tmp?.remove()
  })

  function freshNet (): void {
    net = new Map()
    dht = new FakeDht()
    dhtOf = (cid) => [...(dht.providers.get(cid.toString()) ?? [])]
    admitted = new Set()
  }

  it('publishes a package: stored, provided for every file, its signed envelope gossiped', async () => {
    freshNet()
    const a = await node('a')
    const b = await node('b')
    a.host.connect(b.host)
    const added: string[] = []
    a.models.on('added', (model) => added.push(`${model.name}@${model.version}`))

    const result = await a.models.publishFile(await packageCopy())

    expect(result.added).toBe(true)
    expect(result.announced).toBe(2)
    expect(added).toEqual(['tiny@1.0.0'])
    expect(a.models.list().map((m) => m.name)).toEqual(['tiny'])
    for (const file of result.model.manifest.files) expect(dht.providers.get(file.cid)).toEqual(new Set([a.host.peerId.toString()]))
    const [gossiped] = a.host.gossip.published
    expect(gossiped.topic).toBe(MODELS_TOPIC)
    expect(JSON.parse(new TextDecoder().decode(gossiped.data)).manifest.name).toBe('tiny')
    // publishing the same package again adds nothing
    expect((await a.models.publishFile(await packageCopy())).added).toBe(false)
  })

  it('defers provider records until a first peer connects, and sends each once', async () => {
    freshNet()
    const a = await node('a')
    const result = await a.models.publishFile(await packageCopy())
    expect(result.announced).toBe(0)
    // published again while alone: still one model waiting
    expect((await a.models.publishFile(await packageCopy())).announced).toBe(0)
    expect(dht.provided).toBe(0)

    const b = await node('b')
    a.host.connect(b.host)
    await until(() => dht.provided === 2)
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(dht.provided).toBe(2)
  })

  it('pulls a model from a peer over real streams: envelope first, then every block, verified', async () => {
    freshNet()
    const a = await node('a')
    const b = await node('b')
    a.host.connect(b.host)
    await a.models.publishFile(await packageCopy())

    const job = b.models.startPull('tiny', null)
    const done = await b.models.waitForJob(job.id, 30_000)

    expect(done).toMatchObject({ state: 'done', name: 'tiny', version: '1.0.0', error: null })
    expect(done!.peers).toEqual([a.host.peerId.toString()])
    expect(done!.fetchedBlocks).toBeGreaterThan(8)
    const verified = await b.models.verify('tiny', '1.0.0')
    expect(verified.manifest).toEqual(a.models.get('tiny', '1.0.0')!.manifest)
    // the puller became a provider too
    await until(() => [...dht.providers.values()].every((holders) => holders.has(b.host.peerId.toString())))
  })

  it('a provider that sends a block not matching its CID is penalized and dropped; an honest one completes the pull', async () => {
    freshNet()
    const honest = await node('honest')
    const puller = await node('puller')
    // the honest node's records do not reach the DHT at first: the liar is the only provider
    honest.host.provideError = new Error('no DHT here')
    await honest.models.publishFile(await packageCopy())
    admitted.add(honest.host.peerId.toString())
    const announcement = signedMessage(honest.host.peerId, MODELS_TOPIC, honest.host.gossip.published[0].data)
    expect(await puller.host.gossip.topicValidators.get(MODELS_TOPIC)!(honest.host.peerId, announcement)).toBe(TopicValidatorResult.Accept)
    const liar = new FakeHost(await makePeerId(), net, dht)
    await liar.handle(BLOCKS_PROTOCOL, async (stream) => {
      const channel = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
      const wants = decodeWantList((await channel.read()).subarray())
      for (const cid of wants) await channel.write(encodeBlockFrame(cid, randomBytes(1024)))
      await stream.close()
    })
    const files = honest.models.get('tiny', '1.0.0')!.manifest.files
    for (const file of files) dht.providers.set(file.cid, new Set([liar.peerId.toString()]))
    puller.host.connected = [liar.peerId]

    const failed = await puller.models.waitForJob(puller.models.startPull('tiny', '1.0.0').id, 30_000)
    expect(failed?.state).toBe('failed')
    // (each of its parallel requests may be penalized before it is dropped)
    expect(new Set(penalties.map((p) => p.peer))).toEqual(new Set([liar.peerId.toString()]))
    expect(puller.models.list()).toEqual([])

    // the honest records arrive: the next pull takes every block from the honest node
    honest.host.provideError = null
    honest.host.connect(puller.host)
    await until(() => files.every((file) => dht.providers.get(file.cid)!.has(honest.host.peerId.toString())))
    const done = await puller.models.waitForJob(puller.models.startPull('tiny', '1.0.0').id, 30_000)
    expect(done).toMatchObject({ state: 'done', error: null })
    expect(penalties.length).toBeGreaterThanOrEqual(1)
    expect(new Set(penalties.map((p) => p.peer))).toEqual(new Set([liar.peerId.toString()]))
    await puller.models.verify('tiny', '1.0.0')
  })

  it('keeps gossiped manifests only when admitted and signed by the operator\'s publisher; the catalog is bounded', async () => {
    freshNet()
    const a = await node('a')
    await a.models.publishFile(await packageCopy())
    const envelope = a.host.gossip.published[0].data
    const b = await node('b', { maxCatalog: 1 })
    const validate = b.host.gossip.topicValidators.get(MODELS_TOPIC)!
    expect(b.host.gossip.subscribed.has(MODELS_TOPIC)).toBe(true)

    // from a peer that is not admitted
    expect(await validate(a.host.peerId, signedMessage(a.host.peerId, MODELS_TOPIC, envelope))).toBe(TopicValidatorResult.Reject)
    admitted.add(a.host.peerId.toString())
    // tampered: another version under the same signature
    const tampered = JSON.parse(new TextDecoder().decode(envelope))
    tampered.manifest.version = '1.0.1'
    expect(await validate(a.host.peerId, signedMessage(a.host.peerId, MODELS_TOPIC, JSON.stringify(tampered)))).toBe(TopicValidatorResult.Reject)
    expect(b.models.catalogEntries()).toEqual([])

    expect(await validate(a.host.peerId, signedMessage(a.host.peerId, MODELS_TOPIC, envelope))).toBe(TopicValidatorResult.Accept)
    expect(b.models.catalogFor('tiny').map((e) => e.manifest.version)).toEqual(['1.0.0'])
    expect(b.models.catalogEntries()[0].origin).toBe(a.host.peerId.toString())
  })

  it('stop releases what start took: protocols, the topic and its validator', async () => {
    freshNet()
    const a = await node('a')
    expect([...a.host.handlers.keys()].sort()).toEqual(['/bkg/blocks/1.0.0', '/bkg/manifests/1.0.0'])
    await stopAll([['models', a.models]])
    services.splice(services.indexOf(a.models), 1)
    expect(a.host.handlers.size).toBe(0)
    expect(a.host.gossip.subscribed.has(MODELS_TOPIC)).toBe(false)
    expect(a.host.gossip.topicValidators.has(MODELS_TOPIC)).toBe(false)
  })
})

async function until (check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
