import { afterEach, describe, expect, it, vi } from 'vitest'
import { BkgError } from '../../lib/bkg-error.ts'
import { LLM_TOPIC } from '../../protocols/ids.ts'
import type { ModelCandidate } from '../../node/llm/peer/announcements.ts'
import { inferServer, type InferServer } from '../../node/llm/peer/infer-server.ts'
import { PeerChoice } from '../../node/llm/peer/peer-choice.ts'
import { peerMesh, type PeerMesh } from '../../node/llm/peer/peer-mesh.ts'
import { remoteBackend } from '../../node/llm/peer/remote-backend.ts'
import type { LlmService, MeshInference } from '../../node/llm/llm-service.ts'
import type { ChatEvent, InferenceBackend, LlmModelInfo } from '../../node/llm/types.ts'
import { FakeGossipsub, signedMessage } from '../pubsub/fake-gossipsub.ts'
import { busyError, chatRequest, collect, FakeBackend, fakeNet, log, MODEL, SHA, type FakeHost } from './peer-fakes.ts'

/**
 * The remote backend over fake hosts with real stream pairs: the best peer first, the next one
 * when it fails before its first token, never a silent re-run after it.
 */

const servers: InferServer[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map(async (server) => { await server.stop() }))
})

interface Net {
  client: FakeHost
  peers: FakeHost[]
  backends: FakeBackend[]
  choice: PeerChoice
  fallbacks: Array<{ reason: string, peerId: string }>
  remote: ReturnType<ReturnType<typeof remoteBackend>>
}

/** A client and `n` serving peers announcing MODEL, with round trips 1, 2, 3… ms in that order (so the first is chosen first). */
async function net (n: number, candidates?: (peers: FakeHost[]) => ModelCandidate[]): Promise<Net> {
  const [client, ...peers] = await fakeNet(n + 1)
  const backends: FakeBackend[] = []
  for (const peer of peers) {
    const backend = new FakeBackend(peer.id)
    backends.push(backend)
    const server = inferServer({ closeGraceMs: 2000 })({ streams: peer.streams, peers: { isAdmitted: () => true }, local: backend, log })
    await server.start()
    servers.push(server)
  }
  const choice = new PeerChoice()
  peers.forEach((peer, i) => { choice.observeRoundTrip(peer.id, i + 1) })
  const fallbacks: Net['fallbacks'] = []
  const listed = candidates ?? ((hosts) => hosts.map((peer) => ({ peerId: peer.id, sha256: SHA, slots: { busy: 0, total: 2, queued: 0 }, receivedAt: 0 })))
  const remote = remoteBackend()({
    streams: client.streams,
    candidates: () => listed(peers),
    choice,
    log,
    onFallback: (reason, peerId) => fallbacks.push({ reason, peerId })
  })
  return { client, peers, backends, choice, fallbacks, remote }
}

async function rejection (promise: Promise<unknown>): Promise<BkgError & { retryAfterSeconds?: number }> {
  try {
    await promise
  } catch (err) {
    return err as BkgError
  }
  throw new Error('expected a rejection')
}

function done (events: ChatEvent[]): Extract<ChatEvent, { type: 'done' }>['result'] {
  return (events.at(-1) as Extract<ChatEvent, { type: 'done' }>).result
}

describe('remote backend', () => {
  it('runs on the best peer and says so', async () => {
    const { peers, backends, remote, choice } = await net(2)
    // the second peer is nearer now: choice follows the measurements, not the list's order
    choice.observeRoundTrip(peers[0].id, 50)
    choice.observeRoundTrip(peers[0].id, 50)
    const events = await collect(remote.chat(chatRequest(), {}))
    expect(events.map((e) => e.type)).toEqual(['start', 'text', 'text', 'text', 'text', 'text', 'done'])
    expect(done(events)).toMatchObject({ servedBy: peers[1].id, viaPeer: true, failedPeers: [] })
    expect(backends[0].calls).toEqual([])
    expect(choice.inFlight(peers[1].id)).toBe(0)
    expect(choice.latencyOf(peers[1].id)).toBeGreaterThan(0)
  })

  it('a peer that fails before its first token is replaced by the next best, and the answer lists it', async () => {
    const { peers, backends, remote, fallbacks } = await net(3)
    backends[0].options = { failBeforeFirstToken: () => new Error('GPU on fire') }
    backends[1].options = { refuse: () => busyError(2) }

    const events = await collect(remote.chat(chatRequest(), {}))

    // one start only: the one of the peer that served
    expect(events.filter((e) => e.type === 'start')).toEqual([{ type: 'start', provenance: expect.objectContaining({ servedBy: peers[2].id, viaPeer: true }) }])
    const result = done(events)
    expect(result.servedBy).toBe(peers[2].id)
    expect(result.text).toBe('t0 t1 t2 t3 t4 ')
    expect(result.failedPeers.map((f) => f.peerId)).toEqual([peers[0].id, peers[1].id])
    expect(result.failedPeers[0].error).toMatch(/^llm_failed/)
    expect(result.failedPeers[1].error).toMatch(/^llm_busy/)
    expect(fallbacks).toEqual([{ reason: 'llm_failed', peerId: peers[0].id }, { reason: 'llm_busy', peerId: peers[1].id }])
  })

  it('a peer killed before its first token (its streams reset) is replaced', async () => {
    const { peers, backends, remote } = await net(2)
    backends[0].options = { failBeforeFirstToken: () => { peers[0].kill(); return new Error('dying') } }
    const result = done(await collect(remote.chat(chatRequest(), {})))
    expect(result.servedBy).toBe(peers[1].id)
    expect(result.failedPeers).toEqual([{ peerId: peers[0].id, error: expect.stringMatching(/llm_peer_failed|llm_failed/) }])
  })

  it('after the first token a failure is the caller\'s: no other peer runs it again', async () => {
    const { peers, backends, remote } = await net(2)
    backends[0].options = { tokens: 10, onToken: (n) => { if (n === 2) peers[0].kill() } }
    const seen: string[] = []
    const err = await rejection((async () => {
      for await (const event of remote.chat(chatRequest(), {})) seen.push(event.type)
    })())
    expect(err).toMatchObject({ code: 'llm_peer_failed', status: 502 })
    expect(seen[0]).toBe('start')
    expect(seen).toContain('text')
    expect(backends[1].calls).toEqual([])
  })

  it('gives up after three peers with the last error (Retry-After kept), and with llm_no_peer when nobody announces the model', async () => {
    const { backends, remote } = await net(4)
    for (const backend of backends) backend.options = { refuse: () => busyError(7) }
    const err = await rejection(collect(remote.chat(chatRequest(), {})))
    expect(err).toMatchObject({ code: 'llm_busy', status: 429, retryAfterSeconds: 7 })
    expect(backends.filter((b) => b.calls.length > 0)).toHaveLength(3)

    const empty = await net(0)
    expect(await rejection(collect(empty.remote.chat(chatRequest(), {})))).toMatchObject({ code: 'llm_no_peer', status: 503 })
  })

  it('a request every peer would refuse is not tried on another', async () => {
    const { backends, remote } = await net(2)
    backends[0].options = { refuse: () => new BkgError('llm_context_exceeded', 400, 'the prompt is too long') }
    expect(await rejection(collect(remote.chat(chatRequest(), {})))).toMatchObject({ code: 'llm_context_exceeded', status: 400 })
    expect(backends[1].calls).toEqual([])
  })

  it('skips excluded peers, and a peer that serves another file than it announced', async () => {
    const { peers, backends, remote } = await net(3, (hosts) => hosts.map((peer, i) => ({ peerId: peer.id, sha256: i === 1 ? 'cd'.repeat(32) : SHA, slots: { busy: 0, total: 2, queued: 0 }, receivedAt: 0 })))
    const result = done(await collect(remote.chat(chatRequest(), { exclude: [peers[0].id] })))
    expect(backends[0].calls).toEqual([])
    expect(result.servedBy).toBe(peers[2].id)
    expect(result.failedPeers).toEqual([{ peerId: peers[1].id, error: expect.stringMatching(/^llm_model_mismatch/) }])
  })

  it('embeds on the best peer, retrying as a chat does', async () => {
    const { peers, backends, remote } = await net(2)
    backends[0].options = { refuse: () => busyError(1) }
    const result = await remote.embed({ model: MODEL, input: ['abc'] }, {})
    expect(result).toMatchObject({ servedBy: peers[1].id, viaPeer: true, embeddings: [[3, 0, 1]] })
  })

  it('a consumer that stops early cancels the peer\'s generation', async () => {
    const { backends, remote } = await net(1)
    backends[0].options = { tokens: Infinity }
    for await (const event of remote.chat(chatRequest(), {})) if (event.type === 'text') break
    await vi.waitFor(() => { expect(backends[0].finished).toBe(true) })
    expect(backends[0].produced - backends[0].producedAtAbort!).toBeLessThanOrEqual(1)
  })
})

describe('peer mesh (the LLM service\'s mesh hook)', () => {
  function models (loaded: boolean): () => Array<Pick<LlmModelInfo, 'id' | 'sha256' | 'loaded' | 'slots'>> {
    return () => [{ id: MODEL, sha256: SHA, loaded, slots: loaded ? { busy: 0, total: 2, queued: 0 } : null }]
  }

  it('fits the service\'s MeshInference hook', () => {
    // typecheck only: the composition root passes peerMesh(init, components) as the service's `mesh`
    const hook = (make: ReturnType<typeof peerMesh>): ((local: InferenceBackend, service: LlmService) => MeshInference) => make
    expect(typeof hook).toBe('function')
  })

  it('a node without the model answers through the peer whose announcement it believed', async () => {
    const [a, b] = await fakeNet(2)
    const gossip = { a: new FakeGossipsub(), b: new FakeGossipsub() }
    const peers = { isAdmitted: () => true, denial: () => undefined, on: () => {}, off: () => {} } as never
    const backendA = new FakeBackend(a.id)
    const meshes: PeerMesh[] = [
      peerMesh({}, { peerId: a.peerId, streams: a.streams, pubsub: gossip.a.as(), peers, log })(backendA, { models: models(true) }),
      peerMesh({}, { peerId: b.peerId, streams: b.streams, pubsub: gossip.b.as(), peers, log })(new FakeBackend(b.id), { models: models(false) })
    ]
    try {
      for (const mesh of meshes) await mesh.start()
      await vi.waitFor(() => { expect(gossip.a.published).toHaveLength(1) })
      // b holds nothing loaded: it says nothing
      expect(gossip.b.published).toEqual([])
      await gossip.b.topicValidators.get(LLM_TOPIC)!(a.peerId, signedMessage(a.peerId, LLM_TOPIC, gossip.a.published[0].data))

      const [, meshB] = meshes
      expect(meshB.candidates(MODEL)).toEqual({ peers: 1, free: 1 })
      expect(meshB.models()).toEqual([expect.objectContaining({ id: MODEL, peerId: a.id, sha256: SHA, slots: { busy: 0, total: 2, queued: 0 } })])
      const result = done(await collect(meshB.backend.chat(chatRequest(), {})))
      expect(result).toMatchObject({ servedBy: a.id, viaPeer: true })
      expect(backendA.calls).toEqual([{ model: MODEL, principal: `peer:${b.id}` }])
    } finally {
      for (const mesh of meshes) await mesh.stop()
    }
  })
})
