import { lpStream } from '@libp2p/utils'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { INFER_PROTOCOL } from '../../protocols/ids.ts'
import {
  decodeClientFrame, decodeServerFrame, encodeFrame, MAX_SERVER_FRAME_BYTES,
  type ClientFrame, type InferChatRequest, type InferEmbedRequest
} from '../../protocols/infer.ts'
import { peerChat, peerEmbed, PeerInferError } from '../../node/llm/peer/infer-client.ts'
import { inferServer, type InferServer } from '../../node/llm/peer/infer-server.ts'
import type { ChatEvent, ChatRequest, ChatResult, EmbedRequest } from '../../node/llm/types.ts'
import { busyError, chatRequest, collect, FakeBackend, fakeNet, log, MODEL, SHA, type FakeBackendOptions, type FakeHost } from './peer-fakes.ts'

/**
 * `/bkg/infer/1.0.0` between two fake hosts over real stream pairs: a client (peerChat,
 * peerEmbed) and a server answering with a fake local backend.
 */

const servers: InferServer[] = []

afterEach(async () => {
  await Promise.all(servers.splice(0).map(async (server) => { await server.stop() }))
})

async function pair (options: FakeBackendOptions = {}, admitted = true): Promise<{ client: FakeHost, server: FakeHost, backend: FakeBackend, infer: InferServer }> {
  const [client, server] = await fakeNet(2)
  const backend = new FakeBackend(server.id, options)
  const infer = inferServer({ closeGraceMs: 2000 })({
    streams: server.streams,
    peers: { isAdmitted: (peer) => admitted && peer.toString() === client.id },
    local: backend,
    log
  })
  await infer.start()
  servers.push(infer)
  return { client, server, backend, infer }
}

async function rejection (promise: Promise<unknown>): Promise<PeerInferError> {
  try {
    await promise
  } catch (err) {
    return err as PeerInferError
  }
  throw new Error('expected a rejection')
}

describe('infer wire format', () => {
  it('a parsed request is a ChatRequest / EmbedRequest, and a local ChatResult is a valid done frame', () => {
    const chat = decodeClientFrame(encodeFrame({ type: 'chat', request: chatRequest({ temperature: 0, seed: 7, stop: ['\n'] }), credit: 8 }))
    if (chat.type !== 'chat') throw new Error('chat frame expected')
    // assignability is the typecheck's job: these lines fail `npm run typecheck` if the shapes drift
    const request: ChatRequest = chat.request
    const embed = decodeClientFrame(encodeFrame({ type: 'embed', request: { model: MODEL, input: ['a'] } }))
    if (embed.type !== 'embed') throw new Error('embed frame expected')
    const embedRequest: EmbedRequest = embed.request
    // and the other way: every field of the contract's requests is one the wire format carries
    const everyChatField: [Exclude<keyof ChatRequest, keyof InferChatRequest>] extends [never] ? true : false = true
    const everyEmbedField: [Exclude<keyof EmbedRequest, keyof InferEmbedRequest>] extends [never] ? true : false = true
    expect(everyChatField && everyEmbedField).toBe(true)
    expect(request.seed).toBe(7)
    expect(embedRequest.input).toEqual(['a'])

    const provenance = { model: MODEL, modelSha256: SHA, backend: 'b', servedBy: 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N', viaPeer: false, deterministic: true }
    const usage = { promptTokens: 1, completionTokens: 1, totalTokens: 2 }
    const timings = { queuedMs: 0, firstTokenMs: 1, totalMs: 1 }
    const toolCalls = [{ id: 'call_1', name: 'f', arguments: '{}' }]
    const result: ChatResult = { ...provenance, id: 'x', text: 'hi', toolCalls, finishReason: 'stop', usage, timings, failedPeers: [] }
    const done = decodeServerFrame(encodeFrame({ type: 'done', result }))
    if (done.type !== 'done') throw new Error('done frame expected')
    const back: ChatResult = done.result
    expect(back).toEqual(result)
  })

  it('refuses unknown request fields, a bad model id, zero credit and oversized text', () => {
    const frame = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value))
    expect(() => decodeClientFrame(frame({ type: 'chat', request: { ...chatRequest(), grammar: 'x' }, credit: 1 }))).toThrow(/grammar/)
    expect(() => decodeClientFrame(frame({ type: 'chat', request: chatRequest({ model: '../etc' }), credit: 1 }))).toThrow(/NAME@VERSION/)
    expect(() => decodeClientFrame(frame({ type: 'chat', request: chatRequest(), credit: 0 }))).toThrow(/credit/)
    expect(() => decodeServerFrame(frame({ type: 'text', text: 'x'.repeat(70_000), tokens: 1 }))).toThrow(/text/)
    expect(() => decodeClientFrame(frame({ type: 'cancel', extra: 1 }))).toThrow()
  })
})

describe('infer server and client over stream pairs', () => {
  it('streams a chat: start, every token, done; the answer says a peer served it, and who', async () => {
    const { client, server, backend } = await pair({ tokens: 5 })

    const events = await collect(peerChat(client.streams, server.peerId, chatRequest()))

    expect(events.map((e) => e.type)).toEqual(['start', 'text', 'text', 'text', 'text', 'text', 'done'])
    const done = events.at(-1) as Extract<ChatEvent, { type: 'done' }>
    expect(done.result.text).toBe('t0 t1 t2 t3 t4 ')
    expect(done.result.servedBy).toBe(server.id)
    expect(done.result.viaPeer).toBe(true)
    expect((events[0] as Extract<ChatEvent, { type: 'start' }>).provenance).toMatchObject({ servedBy: server.id, viaPeer: true, modelSha256: SHA })
    // the peer queues it under the requesting peer's name
    expect(backend.calls).toEqual([{ model: MODEL, principal: `peer:${client.id}` }])
    await vi.waitFor(() => { expect(backend.finished).toBe(true) })
  })

  it('a reader that stops reading stops the generation once the credit is spent; reading on finishes it', async () => {
    const credit = 8
    const { client, server, backend } = await pair({ tokens: 100 })
    const iterator = peerChat(client.streams, server.peerId, chatRequest(), { credit })[Symbol.asyncIterator]()

    expect((await iterator.next()).value?.type).toBe('start')
    expect((await iterator.next()).value?.type).toBe('text')
    // the reader pauses: the peer may send `credit` text frames, then asks its model for nothing more
    await vi.waitFor(() => { expect(backend.produced).toBe(credit) })
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(backend.produced).toBe(credit)

    let texts = 1
    for (let step = await iterator.next(); step.done !== true; step = await iterator.next()) {
      if (step.value.type === 'text') texts++
    }
    expect(texts).toBe(100)
    expect(backend.produced).toBe(100)
  })

  it('breaking out of the stream cancels the generation within one token', async () => {
    const { client, server, backend, infer } = await pair({ tokens: Infinity })
    let texts = 0
    for await (const event of peerChat(client.streams, server.peerId, chatRequest(), { credit: 4 })) {
      if (event.type === 'text' && ++texts === 3) break
    }
    await vi.waitFor(() => { expect(backend.finished).toBe(true) })
    expect(backend.producedAtAbort).not.toBeNull()
    expect(backend.produced - backend.producedAtAbort!).toBeLessThanOrEqual(1)
    await vi.waitFor(() => { expect(infer.active).toBe(0) })
  })

  it('the caller\'s abort cancels the generation within one token and rejects with its reason', async () => {
    const { client, server, backend } = await pair({ tokens: Infinity })
    const controller = new AbortController()
    const reason = new Error('client went away')
    const err = await rejection((async () => {
      let texts = 0
      for await (const event of peerChat(client.streams, server.peerId, chatRequest(), { signal: controller.signal })) {
        if (event.type === 'text' && ++texts === 5) controller.abort(reason)
      }
    })())
    expect(err).toBe(reason)
    await vi.waitFor(() => { expect(backend.finished).toBe(true) })
    expect(backend.produced - backend.producedAtAbort!).toBeLessThanOrEqual(1)
  })

  it('a reset stream (the client process dying) cancels the generation', async () => {
    const { client, server, backend } = await pair({ tokens: Infinity })
    // a raw client: asks, reads a little, then its stream resets
    const stream = await client.streams.dialProtocol(server.peerId, INFER_PROTOCOL)
    const channel = lpStream(stream, { maxDataLength: MAX_SERVER_FRAME_BYTES })
    await channel.write(encodeFrame({ type: 'chat', request: chatRequest(), credit: 1000 }))
    await channel.read()
    await channel.read()
    stream.abort(new Error('process died'))
    await vi.waitFor(() => { expect(backend.finished).toBe(true) })
    expect(backend.producedAtAbort).not.toBeNull()
    expect(backend.produced - backend.producedAtAbort!).toBeLessThanOrEqual(1)
  })

  it('an error of the peer\'s backend arrives as a PeerInferError with its code, status and Retry-After', async () => {
    const { client, server } = await pair({ refuse: () => busyError(3) })
    const busy = await rejection(collect(peerChat(client.streams, server.peerId, chatRequest())))
    expect(busy).toBeInstanceOf(PeerInferError)
    expect(busy).toMatchObject({ code: 'llm_busy', status: 429, retryAfterSeconds: 3, peerId: server.id, streamFailed: false })

    const broken = await pair({ failBeforeFirstToken: () => new Error('/secret/path exploded') })
    const failed = await rejection(collect(peerChat(broken.client.streams, broken.server.peerId, chatRequest())))
    // anything but a BkgError is the serving node's internal matter: the code says so, the message does not leak it
    expect(failed).toMatchObject({ code: 'llm_failed', status: 500 })
    expect(failed.message).not.toMatch(/secret/)
  })

  it('an error after tokens reaches the reader after those tokens', async () => {
    const { client, server } = await pair({ tokens: 10, failAfterTokens: { tokens: 2, error: () => Object.assign(new Error('x'), {}) } })
    const seen: string[] = []
    const err = await rejection((async () => {
      for await (const event of peerChat(client.streams, server.peerId, chatRequest())) seen.push(event.type)
    })())
    expect(seen).toEqual(['start', 'text', 'text'])
    expect(err).toMatchObject({ code: 'llm_failed' })
  })

  it('refuses a peer that is not admitted', async () => {
    const { client, server, backend } = await pair({}, false)
    const err = await rejection(collect(peerChat(client.streams, server.peerId, chatRequest())))
    expect(err).toMatchObject({ code: 'not_admitted', status: 403 })
    expect(backend.calls).toEqual([])
  })

  it('answers a malformed first frame with invalid_infer_frame, and a request the client can tell is wrong never leaves', async () => {
    const { client, server, backend } = await pair()
    const stream = await client.streams.dialProtocol(server.peerId, INFER_PROTOCOL)
    const channel = lpStream(stream, { maxDataLength: MAX_SERVER_FRAME_BYTES })
    await channel.write(new TextEncoder().encode('{"type":"chat","request":{}}'))
    const frame = decodeServerFrame((await channel.read()).subarray())
    expect(frame).toMatchObject({ type: 'error', code: 'invalid_infer_frame', status: 400 })
    await stream.close()

    const dials = client.dials
    const err = await rejection(collect(peerChat(client.streams, server.peerId, chatRequest({ messages: [] }))))
    expect(err).toMatchObject({ code: 'invalid_request', status: 400 })
    expect(client.dials).toBe(dials)
    expect(backend.calls).toEqual([])

    // a field that is no part of ChatRequest (a route's own) stays here
    const events = await collect(peerChat(client.streams, server.peerId, { ...chatRequest(), stream: true } as never))
    expect(events.at(-1)?.type).toBe('done')
  })

  it('a credit frame first is refused', async () => {
    const { client, server } = await pair()
    const stream = await client.streams.dialProtocol(server.peerId, INFER_PROTOCOL)
    const channel = lpStream(stream, { maxDataLength: MAX_SERVER_FRAME_BYTES })
    await channel.write(encodeFrame({ type: 'credit', n: 3 } satisfies ClientFrame))
    expect(decodeServerFrame((await channel.read()).subarray())).toMatchObject({ type: 'error', code: 'invalid_infer_frame' })
  })

  it('embeds through a peer', async () => {
    const { client, server, backend } = await pair()
    const result = await peerEmbed(client.streams, server.peerId, { model: MODEL, input: ['ab', 'abc'] })
    expect(result).toMatchObject({ dimensions: 3, embeddings: [[2, 0, 1], [3, 0, 1]], servedBy: server.id, viaPeer: true })
    expect(backend.calls).toEqual([{ model: MODEL, principal: `peer:${client.id}` }])

    backend.options = { refuse: () => busyError(1) }
    expect(await rejection(peerEmbed(client.streams, server.peerId, { model: MODEL, input: ['a'] }))).toMatchObject({ code: 'llm_busy', retryAfterSeconds: 1 })
  })

  it('a host that cannot be dialled is a stream failure (another peer may do)', async () => {
    const { client, server } = await pair()
    server.kill()
    const err = await rejection(collect(peerChat(client.streams, server.peerId, chatRequest())))
    expect(err).toMatchObject({ code: 'llm_peer_failed', status: 502, streamFailed: true })
  })
})
