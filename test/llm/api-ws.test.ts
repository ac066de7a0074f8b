/**
 * `WS /api/v1/llm/chat/ws` with a fake LLM service: frames, the token in the query, several chats
 * on one socket by id, cancel and close stopping generation, and backpressure (a client that
 * stops reading pauses its chat's generation).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { FAKE_MODEL, FAKE_PEER, settled, startFakeApi, until, type FakeApi, resetFake } from './api-fake.ts'

let fake: FakeApi
beforeAll(async () => { fake = await startFakeApi() })
afterAll(async () => { await fake.close() })
beforeEach(() => {
  resetFake(fake)
})

const user = [{ role: 'user', content: 'hello' }]

async function connect (token = fake.token): Promise<{ socket: WebSocket, frames: any[], next: (check: (frame: any) => boolean) => Promise<any> }> {
  const socket = new WebSocket(`${fake.url.replace('http', 'ws')}/api/v1/llm/chat/ws?token=${encodeURIComponent(token)}`)
  const frames: any[] = []
  socket.on('message', (data) => frames.push(JSON.parse(String(data))))
  await new Promise((resolve, reject) => {
    socket.once('open', resolve)
    socket.once('error', reject)
  })
  const next = async (check: (frame: any) => boolean): Promise<any> => {
    await until(() => frames.some(check), 'a frame').catch((err: Error) => {
      throw new Error(`${err.message}; frames: ${[...new Set(frames.map((frame) => `${frame.type}/${frame.id}/${frame.error?.code ?? ''}`))].join(' ')}`)
    })
    return frames.find(check)
  }
  return { socket, frames, next }
}

describe('WS /api/v1/llm/chat/ws', () => {
  it('refuses the upgrade without a valid token (401 JSON before the upgrade)', async () => {
    await expect(connect('wrong')).rejects.toThrow(/401/)
    const plain = await fetch(`${fake.url}/api/v1/llm/chat/ws`, { headers: { authorization: `Bearer ${fake.token}` } })
    expect(plain.status).toBe(426)
  })

  it('streams start, token and done frames', async () => {
    const { socket, frames, next } = await connect()
    socket.send(JSON.stringify({ type: 'chat', messages: user, seed: 3 }))
    await next((frame) => frame.type === 'done')
    expect(frames.map((frame) => frame.type)).toEqual(['start', 'token', 'token', 'token', 'token', 'token', 'done'])
    expect(frames[0]).toMatchObject({ type: 'start', served_by: FAKE_PEER, model: FAKE_MODEL, deterministic: true })
    expect(frames[1]).toEqual({ type: 'token', text: 't0 ', tokens: 1 })
    expect(frames[6]).toMatchObject({ type: 'done', result: { id: 'chat_1', text: 't0 t1 t2 t3 t4 ', finish_reason: 'stop', served_by: FAKE_PEER } })
    expect(fake.llm.calls[0].request).toMatchObject({ seed: 3, messages: [{ role: 'user', content: 'hello' }] })
    // the socket serves the next chat
    socket.send(JSON.stringify({ type: 'chat', messages: user, max_tokens: 1 }))
    await until(() => frames.filter((frame) => frame.type === 'done').length === 2, 'the second chat')
    socket.close()
  })

  it('runs chats side by side by id; without ids, one at a time', async () => {
    fake.llm.script.pieces = 20
    const { socket, frames, next } = await connect()
    socket.send(JSON.stringify({ type: 'chat', id: 'a', messages: user }))
    socket.send(JSON.stringify({ type: 'chat', id: 'b', messages: user, max_tokens: 2 }))
    socket.send(JSON.stringify({ type: 'chat', id: 'a', messages: user }))
    await next((frame) => frame.type === 'done' && frame.id === 'a')
    await next((frame) => frame.type === 'done' && frame.id === 'b')
    expect(frames.find((frame) => frame.type === 'error')).toMatchObject({ id: 'a', error: { code: 'chat_busy' } })
    expect(frames.filter((frame) => frame.id === 'b' && frame.type === 'token')).toHaveLength(2)
    expect(frames.filter((frame) => frame.id === 'a' && frame.type === 'token')).toHaveLength(20)
    fake.llm.script.pieces = Infinity
    socket.send(JSON.stringify({ type: 'chat', messages: user }))
    socket.send(JSON.stringify({ type: 'chat', messages: user }))
    const busy = await next((frame) => frame.type === 'error' && frame.id == null)
    expect(busy.error.code).toBe('chat_busy')
    socket.send(JSON.stringify({ type: 'cancel' }))
    expect(await next((frame) => frame.type === 'done' && frame.id == null)).toMatchObject({ result: { finish_reason: 'cancelled' } })
    socket.close()
  })

  it('answers bad frames with an error frame and keeps the socket', async () => {
    const { socket, next, frames } = await connect()
    socket.send('not json')
    expect((await next((frame) => frame.type === 'error')).error.code).toBe('invalid_request')
    socket.send(JSON.stringify({ type: 'chat', messages: user, bogus: 1 }))
    await until(() => frames.length === 2, 'a second error')
    expect(frames[1].error.message).toMatch(/bogus/)
    socket.send(JSON.stringify({ type: 'chat', messages: user }))
    await next((frame) => frame.type === 'done')
    socket.close()
  })

  it('a busy node answers an error frame with retry_after', async () => {
    fake.llm.script.busy = 4
    const { socket, next } = await connect()
    socket.send(JSON.stringify({ type: 'chat', id: 'x', messages: user }))
    expect(await next((frame) => frame.type === 'error')).toEqual({ type: 'error', id: 'x', error: { code: 'llm_busy', message: 'every slot of the model is busy and its queue is full' }, retry_after: 4 })
    socket.close()
  })

  it('cancel stops the chat within one piece; its done frame says cancelled and holds the text so far', async () => {
    fake.llm.script.pieces = Infinity
    const { socket, next, frames } = await connect()
    socket.send(JSON.stringify({ type: 'chat', id: 'c', messages: user }))
    await until(() => frames.length > 10, 'some tokens')
    socket.send(JSON.stringify({ type: 'cancel', id: 'c' }))
    const done = await next((frame) => frame.type === 'done')
    expect(done.id).toBe('c')
    expect(done.result.finish_reason).toBe('cancelled')
    const sent = frames.filter((frame) => frame.type === 'token').map((frame) => frame.text).join('')
    expect(done.result.text.startsWith(sent)).toBe(true)
    await until(() => fake.llm.calls[0].returned, 'the iterator returned')
    const call = fake.llm.calls[0]
    expect(call.produced - call.abortedAt!).toBeLessThanOrEqual(1)
    socket.close()
  })

  it('closing the socket stops every chat on it', async () => {
    fake.llm.script.pieces = Infinity
    const { socket, frames } = await connect()
    socket.send(JSON.stringify({ type: 'chat', id: '1', messages: user }))
    socket.send(JSON.stringify({ type: 'chat', id: '2', messages: user }))
    await until(() => frames.length > 20, 'tokens of both')
    socket.terminate()
    await until(() => fake.llm.calls.length === 2 && fake.llm.calls.every((call) => call.returned), 'both iterators returned')
    for (const call of fake.llm.calls) {
      expect(call.abortedAt).not.toBeNull()
      expect(call.produced - call.abortedAt!).toBeLessThanOrEqual(1)
    }
  })

  it('backpressure: a client that stops reading pauses generation; reading again resumes it', async () => {
    fake.llm.script.pieces = 50_000
    fake.llm.script.piece = () => 'y'.repeat(32 * 1024)
    const { socket, frames } = await connect()
    socket.send(JSON.stringify({ type: 'chat', messages: user }))
    await until(() => frames.length > 2, 'the first frames')
    socket.pause()
    const stalled = await settled(() => fake.llm.calls[0].produced)
    // 1 MiB of unsent frames plus what the socket buffers hold, in 32 KiB pieces
    expect(stalled).toBeLessThan(600)
    expect(fake.llm.calls[0].finished).toBe(false)
    socket.resume()
    await until(() => fake.llm.calls[0].produced > stalled + 100, 'generation to resume')
    socket.terminate()
    await until(() => fake.llm.calls[0].returned, 'the chat to end')
  })
})
