import { waitFor } from './mesh.ts'

export interface RealtimeClient {
  /** every server message, with `arrivedAt` (performance.now() when it was parsed) added */
  messages: any[]
  /** sends a message with a fresh ref and resolves with the server's reply to it */
  request: (message: Record<string, unknown>) => Promise<any>
  send: (message: unknown) => void
  next: (what: string, predicate: (message: any) => boolean, timeoutMs?: number) => Promise<any>
  closed: Promise<{ code: number, reason: string }>
  close: () => void
}

/** A realtime client on Node's built-in WebSocket (the token goes in the query, as a browser's would). */
export async function connectRealtime (baseUrl: string, token: string): Promise<RealtimeClient> {
  const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/realtime?token=${encodeURIComponent(token)}`)
  const messages: any[] = []
  let refs = 0
  const closed = new Promise<{ code: number, reason: string }>((resolve) => socket.addEventListener('close', (event) => resolve({ code: event.code, reason: event.reason })))
  socket.addEventListener('message', (event) => { messages.push({ ...JSON.parse(String(event.data)), arrivedAt: performance.now() }) })
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve())
    socket.addEventListener('error', () => reject(new Error('WebSocket refused')))
  })
  const client: RealtimeClient = {
    messages,
    send: (message) => socket.send(JSON.stringify(message)),
    async request (message) {
      const ref = `r${++refs}`
      socket.send(JSON.stringify({ ...message, ref }))
      return await client.next(`reply ${ref}`, (m) => m.type === 'reply' && m.ref === ref)
    },
    async next (what, predicate, timeoutMs = 10_000) {
      return await waitFor(what, async () => messages.find(predicate), timeoutMs, 20)
    },
    closed,
    close: () => socket.close()
  }
  return client
}
