import type { ServerContext } from '@modelcontextprotocol/server'
import { MAX_PROGRESS_MESSAGE_CHARS, PROGRESS_HEARTBEAT_MS } from './constants.ts'

export interface OutputChunkLike {
  stream: 'stdout' | 'stderr'
  data: Uint8Array
}

/**
 * Progress notifications for a running tool call, when the client asked for them (it sent a
 * `progressToken`): each output chunk as it comes (stderr marked `[stderr] `), and a heartbeat
 * when the guest is quiet. `progress` is the elapsed milliseconds (strictly increasing, as the
 * spec wants), `total` the time limit when one is known, so a client can draw a bar toward the
 * timeout. One notification is in flight at a time; output that arrives meanwhile is sent with
 * the next one, so a guest that prints fast cannot queue unbounded notifications.
 */
export class RunProgress {
  private readonly ctx: ServerContext
  private readonly token: string | number | undefined
  private readonly total: number | undefined
  private readonly started = Date.now()
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() }
  private pending = ''
  private lastStream: 'stdout' | 'stderr' = 'stdout'
  private last = 0
  private lastSentAt = Date.now()
  private sending: Promise<void> | null = null
  private heartbeat: NodeJS.Timeout | null = null
  private stopped = false

  constructor (ctx: ServerContext, total?: number, heartbeatMs = PROGRESS_HEARTBEAT_MS) {
    this.ctx = ctx
    const token = ctx.mcpReq._meta?.progressToken
    this.token = typeof token === 'string' || typeof token === 'number' ? token : undefined
    this.total = total
    if (this.token != null) {
      this.heartbeat = setInterval(() => {
        if (Date.now() - this.lastSentAt >= heartbeatMs && this.sending == null) this.send(`running for ${Math.round((Date.now() - this.started) / 1000)} s`)
      }, Math.max(50, Math.floor(heartbeatMs / 2)))
      this.heartbeat.unref()
    }
  }

  get enabled (): boolean {
    return this.token != null
  }

  /** a chunk of the guest's output */
  output (chunk: OutputChunkLike): void {
    if (this.token == null || this.stopped) return
    const text = this.decoders[chunk.stream].decode(chunk.data, { stream: true })
    if (text === '') return
    if (chunk.stream === 'stderr' && (this.lastStream !== 'stderr' || this.pending === '')) this.pending += '[stderr] '
    else if (chunk.stream === 'stdout' && this.lastStream === 'stderr' && this.pending !== '') this.pending += '[stdout] '
    this.lastStream = chunk.stream
    this.pending += text
    this.flush()
  }

  /** a progress message of the tool's own (a pull's bytes, say) */
  note (message: string, progress?: number, total?: number): void {
    if (this.token == null || this.stopped) return
    this.send(message, progress, total)
  }

  private flush (): void {
    if (this.sending != null || this.pending === '') return
    const message = this.pending.slice(0, MAX_PROGRESS_MESSAGE_CHARS)
    this.pending = this.pending.slice(message.length)
    this.send(message)
  }

  private send (message: string, progress?: number, total?: number): void {
    if (this.token == null || this.ctx.mcpReq.signal.aborted) return
    this.last = Math.max(this.last + 1, progress ?? Date.now() - this.started)
    this.lastSentAt = Date.now()
    const params = { progressToken: this.token, progress: this.last, message, ...((total ?? this.total) != null ? { total: total ?? this.total } : {}) }
    this.sending = this.ctx.mcpReq.notify({ method: 'notifications/progress', params })
      // a closed stream (the client went away) is what cancellation looks like: nothing to report
      .catch(() => {})
      .finally(() => {
        this.sending = null
        this.flush()
      })
  }

  /** stops the heartbeat and waits (briefly) until the output seen so far has been sent */
  async finish (waitMs = 1000): Promise<void> {
    if (this.heartbeat != null) clearInterval(this.heartbeat)
    const deadline = Date.now() + waitMs
    while ((this.sending != null || this.pending !== '') && Date.now() < deadline && !this.ctx.mcpReq.signal.aborted) {
      if (this.sending == null) this.flush()
      await Promise.race([this.sending, new Promise((resolve) => setTimeout(resolve, 20))])
    }
    this.stopped = true
  }

  /** stops without waiting */
  stop (): void {
    if (this.heartbeat != null) clearInterval(this.heartbeat)
    this.stopped = true
  }
}
