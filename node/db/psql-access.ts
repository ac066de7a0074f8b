import { createHash, timingSafeEqual } from 'node:crypto'
import { chmod, mkdir, rm, stat } from 'node:fs/promises'
import { connect as netConnect, createServer, type ListenOptions, type Server, type Socket } from 'node:net'
import { join, resolve as resolvePath } from 'node:path'
import type { PGlite } from '@electric-sql/pglite'
import type { Logger } from 'pino'
import type { Database } from './database.ts'

/**
 * Lets the operator inspect the node's embedded database with a stock `psql`.
 *
 * Not built on @electric-sql/pglite-socket: 0.2.17 pins its peer @electric-sql/pglite to 0.5.14
 * (we run 0.5.16), and it serialises clients per protocol message on PGlite's query mutex only,
 * which the node's own `db.transaction()` releases between its statements, so a psql statement
 * could land inside (and COMMIT or ROLLBACK) one of the node's transactions. This bridge feeds the
 * same PGlite entry point (`execProtocolRaw`) but holds PGlite's transaction mutex from a client's
 * first message until the backend is idle again ("a unit": one statement, or BEGIN ... COMMIT).
 *
 * Admin only: by default it listens on a Unix socket in a 0700 directory of the node's data dir,
 * so only the node's OS user (the operator; and root) can connect. With `adminToken` every client
 * must also send that token as its password; TCP (`listen`) is loopback only and needs the token.
 *
 * Everything runs on PGlite's single backend, which the node shares. So each unit starts with
 * `SET default_transaction_read_only = on` (a guard against accidents, not a boundary: the
 * connection is the superuser, and `BEGIN READ WRITE` lifts it) and ends with `DISCARD ALL`, so no
 * SET, SET ROLE, PREPARE or advisory lock of a psql session outlives its unit or reaches the
 * node. PGlite runs a query synchronously on the node's event loop and ignores statement_timeout:
 * a heavy query stalls the whole node while it runs.
 */

export interface PsqlAccessInit {
  db: Database
  /** directory for the Unix socket (created 0700); exactly one of socketDir and listen */
  socketDir?: string
  /** loopback TCP instead of a Unix socket; requires adminToken */
  listen?: { host: string, port: number }
  /** when set, clients must send it as their password (cleartext; Unix socket or loopback only) */
  adminToken?: string
  log: Logger
  /** how long a client may keep the database locked (open transaction) without sending anything */
  holdTimeoutMs?: number
}

export interface PsqlEndpoint {
  /** libpq connection string: `psql "<connect>"` */
  connect: string
  /** the shell command to print for the operator */
  command: string
}

// libpq looks for `<host dir>/.s.PGSQL.<port>`; the port only names the file
const SOCKET_PORT = 5432
// sun_path is 108 bytes on Linux and 104 on macOS, both counting the terminating NUL
const MAX_SOCKET_PATH = 103
const PROTOCOL_3 = 196608
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const MAX_STARTUP = 10_000
const MAX_MESSAGE = 64 * 1024 * 1024
const AUTH_DEADLINE_MS = 10_000
const MAX_SESSIONS = 8
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])

export class PsqlAccess {
  private readonly init: PsqlAccessInit
  private server: Server | undefined
  private stopping = false
  private socketPath: string | undefined
  private readonly sessions = new Set<Session>()
  /** where psql connects, while access is open */
  endpoint: PsqlEndpoint | undefined

  constructor (init: PsqlAccessInit) {
    if ((init.socketDir == null) === (init.listen == null)) throw new Error('psql access needs exactly one of socketDir and listen')
    if (init.listen != null) {
      if (!LOOPBACK.has(init.listen.host)) throw new Error(`psql access listens on loopback only, not ${init.listen.host}`)
      // anyone on the machine can reach a loopback port; only the token makes it admin only
      if (init.adminToken == null || init.adminToken === '') throw new Error('psql access over TCP needs the admin token as password')
    }
    this.init = init
  }

  async start (): Promise<PsqlEndpoint> {
    if (this.server != null) throw new Error('psql access already started')
    this.stopping = false
    const server = createServer((socket) => { this.accept(socket) })
    server.maxConnections = MAX_SESSIONS
    let params: Record<string, string | number>
    if (this.init.socketDir != null) {
      // libpq takes a host that starts with / as a socket directory; a relative one would be a hostname
      const dir = resolvePath(this.init.socketDir)
      const path = join(dir, `.s.PGSQL.${SOCKET_PORT}`)
      if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new Error(`psql socket path is too long for a Unix socket (${Buffer.byteLength(path)} > ${MAX_SOCKET_PATH} bytes): ${path}; use a shorter socketDir`)
      await this.prepareSocketDir(dir, path)
      await listen(server, { path })
      // the 0700 directory is what keeps other users out; the socket's own mode is a second lock
      await chmod(path, 0o600).catch(async (err: unknown) => {
        await new Promise((resolve) => server.close(resolve))
        throw err
      })
      this.socketPath = path
      params = { host: dir, port: SOCKET_PORT }
    } else {
      const { host, port } = this.init.listen as { host: string, port: number }
      await listen(server, { host, port })
      const address = server.address()
      params = { host, port: typeof address === 'object' && address != null ? address.port : port, sslmode: 'disable' }
    }
    this.server = server
    // PGlite has one database and one user; libpq still wants names, and these are PGlite's own
    const connect = Object.entries({ ...params, user: 'postgres', dbname: 'postgres' }).map(([k, v]) => `${k}=${conninfoValue(String(v))}`).join(' ')
    const command = `psql ${shellQuote(connect)}`
    this.init.log.info({ at: this.socketPath ?? `${params.host}:${params.port}`, password: this.init.adminToken != null, command }, 'psql access listening')
    this.endpoint = { connect, command }
    return this.endpoint
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server == null) return
    this.server = undefined
    this.endpoint = undefined
    this.stopping = true
    const closed = new Promise<void>((resolve) => server.close(() => { resolve() }))
    await Promise.all([...this.sessions].map(async (session) => { await session.close() }))
    await closed
    if (this.socketPath != null) await rm(this.socketPath, { force: true })
    this.socketPath = undefined
    this.init.log.info('psql access stopped')
  }

  private async prepareSocketDir (dir: string, path: string): Promise<void> {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const info = await stat(dir)
    if (!info.isDirectory()) throw new Error(`psql socket dir is not a directory: ${dir}`)
    // a directory another user owns could be re-opened to others behind our back
    if (process.getuid != null && info.uid !== process.getuid()) throw new Error(`psql socket dir belongs to another user: ${dir}`)
    await chmod(dir, 0o700)
    // a socket file left by a crashed node blocks listen(); one that answers belongs to a live node
    if (await stat(path).then(() => true, () => false)) {
      if (await answers(path)) throw new Error(`psql socket is in use by another process: ${path}`)
      await rm(path, { force: true })
    }
  }

  private accept (socket: Socket): void {
    if (this.stopping) {
      socket.destroy()
      return
    }
    const session = new Session(socket, this.init)
    this.sessions.add(session)
    void session.done.finally(() => this.sessions.delete(session))
  }
}

/** One client connection: parses its messages and runs them, one at a time, in units. */
class Session {
  readonly done: Promise<void>
  private readonly socket: Socket
  private readonly init: PsqlAccessInit
  private readonly log: Logger
  private readonly started = Date.now()
  private buffer: Buffer = Buffer.alloc(0)
  private phase: 'startup' | 'password' | 'ready' = 'startup'
  private startupPacket: Buffer | undefined
  private queue: Promise<void> = Promise.resolve()
  private pending = 0
  private closed = false
  /** a FATAL is on its way: read nothing more */
  private ending = false
  private pg: PGlite | undefined
  /** releases PGlite's transaction mutex; set while a unit is open */
  private release: (() => void) | undefined
  private holdTimer: NodeJS.Timeout | undefined
  private readonly authTimer: NodeJS.Timeout
  private resolveDone!: () => void

  constructor (socket: Socket, init: PsqlAccessInit) {
    this.socket = socket
    this.init = init
    this.log = init.log.child({ psql: socket.remoteAddress ?? 'unix' })
    this.done = new Promise((resolve) => { this.resolveDone = resolve })
    this.authTimer = setTimeout(() => { this.fatal('08P01', 'no startup within the deadline') }, AUTH_DEADLINE_MS)
    socket.setNoDelay(true)
    socket.on('data', (chunk) => { this.receive(chunk) })
    socket.on('error', (err) => { this.log.debug({ err }, 'psql socket error') })
    socket.on('close', () => { this.onClose() })
  }

  async close (): Promise<void> {
    this.socket.destroy()
    await this.done
  }

  private receive (chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    while (!this.closed && !this.ending) {
      if (this.phase === 'startup') {
        if (this.buffer.length < 8) return
        const length = this.buffer.readInt32BE(0)
        if (length < 8 || length > MAX_STARTUP) return this.fatal('08P01', 'invalid startup packet length')
        if (this.buffer.length < length) return
        const packet = this.take(length)
        const code = packet.readInt32BE(4)
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          // no TLS: the socket never leaves the machine; 'N' makes libpq go on in the clear
          this.socket.write('N')
        } else if (code === CANCEL_REQUEST) {
          // a query runs synchronously inside PGlite: there is nothing to interrupt
          this.ending = true
          this.socket.destroy()
        } else if (code === PROTOCOL_3) {
          this.startupPacket = packet
          if (this.init.adminToken != null) {
            this.phase = 'password'
            this.socket.write(authenticationCleartextPassword())
          } else {
            this.authenticated()
          }
        } else {
          return this.fatal('0A000', 'unsupported frontend protocol')
        }
      } else {
        if (this.buffer.length < 5) return
        const length = this.buffer.readInt32BE(1)
        if (length < 4 || length > MAX_MESSAGE) return this.fatal('08P01', 'invalid message length')
        if (this.buffer.length < length + 1) return
        const message = this.take(length + 1)
        if (this.phase === 'password') {
          this.checkPassword(message)
        } else {
          this.enqueue(async () => { await this.handle(message) })
        }
      }
    }
  }

  private take (length: number): Buffer {
    // copy: execProtocolRaw may hold on to it after the socket reuses its buffers
    const out = Buffer.from(this.buffer.subarray(0, length))
    this.buffer = this.buffer.subarray(length)
    return out
  }

  private checkPassword (message: Buffer): void {
    const token = this.init.adminToken as string
    const given = message[0] === 0x70 ? message.subarray(5, message.length - 1) : Buffer.alloc(0)
    const digest = (value: Buffer | string): Buffer => createHash('sha256').update(value).digest()
    if (message[0] !== 0x70 || !timingSafeEqual(digest(given), digest(token))) {
      this.log.warn('psql connection refused: wrong password')
      return this.fatal('28P01', 'password authentication failed (the password is the node admin token)')
    }
    this.authenticated()
  }

  private authenticated (): void {
    clearTimeout(this.authTimer)
    this.phase = 'ready'
    this.log.info('psql session opened')
    // PGlite answers a startup packet with AuthenticationOk and its parameters, and ignores the
    // client's options (checked: `options=-c search_path=...` changes nothing)
    const packet = this.startupPacket as Buffer
    this.enqueue(async () => { await this.handle(packet) })
  }

  private enqueue (task: () => Promise<void>): void {
    this.pending++
    // psql sends one statement at a time, but COPY FROM STDIN can stream faster than PGlite runs
    if (this.pending > 64) this.socket.pause()
    this.queue = this.queue.then(task).catch((err: unknown) => {
      this.log.warn({ err }, 'psql session failed')
      // only an authenticated operator gets here, and the cause is what they need to see
      this.fatal('XX000', `psql bridge: ${err instanceof Error ? err.message : String(err)}`)
    }).finally(() => {
      this.pending--
      if (this.pending <= 16 && !this.closed) this.socket.resume()
    })
  }

  private async handle (message: Buffer): Promise<void> {
    if (this.closed) return
    if (message[0] === 0x58) { // Terminate: PGlite has no connection to end, only ours
      this.socket.end()
      return
    }
    if (this.release == null) await this.beginUnit()
    if (this.closed) return
    const out = await this.run(message)
    if (out.length > 0) await this.write(out)
    if (readyStatus(out) === 'I') await this.endUnit()
    else this.armHoldTimer()
  }

  private async beginUnit (): Promise<void> {
    this.pg ??= await this.init.db.open()
    const pg = this.pg
    // the node's db.transaction(), db.query() and db.exec() all take this mutex first, so while a
    // unit holds it no statement of the node runs, and a unit never starts inside one of the node's
    // transactions
    this.release = await new Promise<() => void>((resolve, reject) => {
      pg._runExclusiveTransaction(async () => {
        await new Promise<void>((_resolve) => { resolve(_resolve) })
      }).catch(reject)
    })
    await this.internal('SET default_transaction_read_only = on')
  }

  private async endUnit (): Promise<void> {
    clearTimeout(this.holdTimer)
    try {
      // DISCARD ALL: RESET ALL, SET SESSION AUTHORIZATION DEFAULT, DEALLOCATE ALL, advisory unlock,
      // UNLISTEN * (the node does not LISTEN), temp tables; the backend is the node's again
      await this.internal('DISCARD ALL')
    } finally {
      this.release?.()
      this.release = undefined
    }
  }

  /** Leaves the backend idle and clean after a client vanished in the middle of a unit. */
  private async abortUnit (): Promise<void> {
    if (this.release == null) return
    try {
      // CopyFail ends a COPY FROM STDIN and is ignored otherwise; Sync ends an extended-protocol batch
      await this.run(Buffer.from([0x66, 0, 0, 0, 5, 0]))
      if (readyStatus(await this.run(Buffer.from([0x53, 0, 0, 0, 4]))) !== 'I') await this.internal('ROLLBACK')
    } catch (err) {
      this.log.error({ err }, 'could not roll back an abandoned psql transaction')
    }
    await this.endUnit().catch((err: unknown) => { this.log.error({ err }, 'could not reset the session after psql') })
  }

  private async run (message: Uint8Array): Promise<Uint8Array> {
    const pg = this.pg as PGlite
    return await pg.runExclusive(async () => await pg.execProtocolRaw(message))
  }

  private async internal (sql: string): Promise<void> {
    const out = await this.run(simpleQuery(sql))
    const error = errorMessage(out)
    if (error != null) throw new Error(`${sql}: ${error}`)
  }

  private armHoldTimer (): void {
    clearTimeout(this.holdTimer)
    const ms = this.init.holdTimeoutMs ?? 15_000
    this.holdTimer = setTimeout(() => {
      this.log.warn({ ms }, 'psql session kept the node database locked too long; rolled back and closed')
      this.fatal('25P03', `terminating: an open transaction blocked the node's database for ${ms} ms`)
    }, ms)
  }

  private async write (data: Uint8Array): Promise<void> {
    if (this.closed || this.socket.destroyed) return
    await new Promise<void>((resolve) => { this.socket.write(data, () => { resolve() }) })
  }

  private fatal (code: string, message: string): void {
    if (this.closed || this.ending) return
    this.ending = true
    this.socket.end(errorResponse('FATAL', code, message))
    this.socket.destroySoon()
  }

  private onClose (): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.authTimer)
    clearTimeout(this.holdTimer)
    // behind whatever is in flight, so the rollback cannot overtake a running statement
    // each task's failure was logged and sent to the client by enqueue; this only waits for it
    this.queue = this.queue.catch(() => {}).then(async () => { await this.abortUnit() }).finally(() => {
      if (this.phase === 'ready') this.log.info({ ms: Date.now() - this.started }, 'psql session closed')
      this.resolveDone()
    })
  }
}

/** The transaction status of the last ReadyForQuery in a backend reply: I, T or E. */
function readyStatus (out: Uint8Array): string | undefined {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  let status: string | undefined
  for (let i = 0; i + 5 <= out.length;) {
    const length = view.getInt32(i + 1)
    if (length < 4) break
    if (out[i] === 0x5a && length === 5 && i + 5 < out.length) status = String.fromCharCode(out[i + 5])
    i += 1 + length
  }
  return status
}

function errorMessage (out: Uint8Array): string | undefined {
  const buf = Buffer.from(out.buffer, out.byteOffset, out.byteLength)
  for (let i = 0; i + 5 <= buf.length;) {
    const length = buf.readInt32BE(i + 1)
    if (length < 4) break
    if (buf[i] === 0x45) {
      const fields = buf.subarray(i + 5, i + 1 + length).toString('utf8').split('\0')
      return fields.find((field) => field.startsWith('M'))?.slice(1) ?? 'error'
    }
    i += 1 + length
  }
  return undefined
}

function simpleQuery (sql: string): Buffer {
  const body = Buffer.from(`${sql}\0`)
  const out = Buffer.alloc(5 + body.length)
  out.write('Q', 0)
  out.writeInt32BE(4 + body.length, 1)
  body.copy(out, 5)
  return out
}

function authenticationCleartextPassword (): Buffer {
  const out = Buffer.alloc(9)
  out.write('R', 0)
  out.writeInt32BE(8, 1)
  out.writeInt32BE(3, 5)
  return out
}

function errorResponse (severity: string, code: string, message: string): Buffer {
  const body = Buffer.from(`S${severity}\0V${severity}\0C${code}\0M${message}\0\0`)
  const out = Buffer.alloc(5 + body.length)
  out.write('E', 0)
  out.writeInt32BE(4 + body.length, 1)
  body.copy(out, 5)
  return out
}

async function listen (server: Server, options: ListenOptions): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

async function answers (path: string): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = netConnect(path)
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })
}

function conninfoValue (value: string): string {
  return /^[A-Za-z0-9_./:-]+$/.test(value) ? value : `'${value.replace(/[\\']/g, (c) => `\\${c}`)}'`
}

function shellQuote (value: string): string {
  return `'${value.replace(/'/g, "'\\''")}'`
}
