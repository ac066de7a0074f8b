import { LiveStdinReader } from './live-stdin.ts'
import { CONTROL_STOP, STOP_NONE, STREAM_STDERR, STREAM_STDOUT } from './worker-protocol.ts'
import type { FromWorker, RunJob, RunOutcome } from './worker-protocol.ts'

export type StreamId = typeof STREAM_STDOUT | typeof STREAM_STDERR
export type StopReason = NonNullable<RunOutcome['reason']>

/**
 * What a runner's host functions use during one run, inside the worker: output streamed to the
 * main thread and counted against the output limit, stdin (static or live), and the one answer
 * to "should the guest stop now?" (deadline, cancellation, a breach). The runner's interrupt
 * hook asks `shouldStop`; the main thread's timer behind it terminates the worker.
 */
export class GuestIO {
  readonly deadline: number
  /** why the run must end from outside; set once */
  stopReason: StopReason | undefined
  /** the guest asked to exit (process.exit): what it writes afterwards is dropped */
  exitCode: number | undefined
  private outputUsed = 0
  private readonly outputLimit: number
  private readonly staticStdin: Uint8Array | undefined
  private staticStdinRead = false
  private readonly liveStdin: LiveStdinReader | undefined

  /** the stop word shared with the main thread (a sleeping guest waits on it) */
  readonly control: Int32Array
  private readonly post: (message: FromWorker, transfer?: ArrayBuffer[]) => void

  constructor (job: RunJob, control: Int32Array, post: (message: FromWorker, transfer?: ArrayBuffer[]) => void) {
    this.control = control
    this.post = post
    this.deadline = Date.now() + job.limits.timeoutMs
    this.outputLimit = job.limits.outputBytes
    this.liveStdin = job.liveStdin !== undefined ? new LiveStdinReader(job.liveStdin) : undefined
    this.staticStdin = job.stdin
  }

  /** true when the guest must stop now; records why */
  shouldStop (): boolean {
    if (this.stopReason !== undefined || this.exitCode !== undefined) return true
    if (Atomics.load(this.control, CONTROL_STOP) !== STOP_NONE) this.stopReason = 'cancelled'
    else if (Date.now() > this.deadline) this.stopReason = 'timeout'
    return this.stopReason !== undefined
  }

  /** marks a breach found by a runner (memory, a file write past the limit) */
  breach (reason: StopReason): void {
    this.stopReason ??= reason
  }

  exit (code: number): void {
    this.exitCode ??= code
  }

  /** sends output as it is written; false once the output limit is reached (the run then ends with reason 'output') */
  write (stream: StreamId, bytes: Uint8Array): boolean {
    if (this.stopReason !== undefined || this.exitCode !== undefined) return false
    if (bytes.length === 0) return true
    const room = this.outputLimit - this.outputUsed
    const fits = bytes.length <= room
    const sent = fits ? bytes : bytes.subarray(0, Math.max(room, 0))
    if (sent.length > 0) {
      this.outputUsed += sent.length
      const data = sent.byteOffset === 0 && sent.byteLength === sent.buffer.byteLength && sent.buffer instanceof ArrayBuffer ? sent : sent.slice()
      this.post({ type: 'output', stream, data }, [data.buffer as ArrayBuffer])
    }
    if (!fits) this.stopReason = 'output'
    return fits
  }

  /** the next chunk of stdin, or null at its end; a live stdin blocks until data comes */
  readStdin (): Uint8Array | null {
    if (this.liveStdin !== undefined) return this.liveStdin.read(() => this.shouldStop())
    if (this.staticStdin === undefined || this.staticStdinRead) return null
    this.staticStdinRead = true
    return this.staticStdin
  }

  /**
   * The files a run created or changed, as many as fit in what is left of the output limit
   * (smallest first, so one huge file does not push out many small ones); the rest by name.
   */
  filesWithinLimit (changed: Array<[string, Uint8Array]>): Pick<RunOutcome, 'files' | 'filesOmitted'> {
    const files: Record<string, Uint8Array> = {}
    const filesOmitted: string[] = []
    for (const [path, content] of [...changed].sort((a, b) => a[1].length - b[1].length)) {
      if (this.outputUsed + content.length <= this.outputLimit) {
        this.outputUsed += content.length
        files[path] = content
      } else {
        filesOmitted.push(path)
      }
    }
    return filesOmitted.length > 0 ? { files, filesOmitted: filesOmitted.sort() } : { files }
  }
}
