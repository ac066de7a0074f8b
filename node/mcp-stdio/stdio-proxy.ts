import http from 'node:http'
import https from 'node:https'
import { Readable } from 'node:stream'
import { rootCertificates, type PeerCertificate } from 'node:tls'
import {
  Client, ProtocolError as ClientProtocolError, SdkError, SdkErrorCode, StreamableHTTPClientTransport,
  type FetchLike, type Progress, type Tool
} from '@modelcontextprotocol/client'
import { ProtocolError, ProtocolErrorCode, SERVER_INFO_META_KEY, Server, type CallToolResult, type ServerContext } from '@modelcontextprotocol/server'
import { serveStdio, type ServeStdioOptions } from '@modelcontextprotocol/server/stdio'
import { PEER_URI_PREFIX } from '../../ca/index.ts'
import { VERSION } from '../version.ts'
import { MODERN_PROTOCOL_VERSION, toolError } from '../mcp/index.ts'

/** How to trust (and be known to) a node's HTTPS API: the CLI's NodeTls. */
export interface ProxyTls {
  /** the operator CA; without it the system's roots apply */
  caPem?: string
  /** accept the server by the PeerId its certificate names (`bkg:peer:<PeerId>`) instead of by host name */
  peerId?: string
  /** a client certificate and key, for a node under --api-admin-mtls */
  certPem?: string
  keyPem?: string
}

/** A running node's API: the CLI's NodeTarget (resolveTarget). */
export interface ProxyTarget {
  url: string
  token: string
  tls?: ProxyTls
}

export interface McpStdioProxyOptions {
  /**
   * Finds the node. Called on the first request (never at start-up, so a client that starts the
   * command only to probe it costs nothing) and again after the node could not be reached: it
   * may have been started since, or restarted on another port. A throw's message is what the
   * caller gets, so it should say what to do ("start it with `bkg start --data DIR`").
   */
  resolve: () => Promise<ProxyTarget>
  /** added to "cannot reach the node at URL: …" (e.g. "is it running? start it with …") */
  hint?: string
  /** one line for the operator; default: `bkg mcp: <line>` on stderr (stdout is the protocol) */
  log?: (line: string) => void
  /** another transport than this process's stdin/stdout (tests) */
  transport?: ServeStdioOptions['transport']
  /** a node call that has been silent (no answer, no progress) this long fails (default 1 h) */
  callIdleTimeoutMs?: number
}

export interface McpStdioProxyHandle {
  /** resolves once the client has gone away (stdin ended or closed) or close() was called */
  readonly ended: Promise<void>
  /** stops serving: closes the stdio connection, aborts calls in flight, drops the node connection */
  close: () => Promise<void>
}

const INSTRUCTIONS = 'Tools of a BKG mesh node, reached through `bkg mcp`: sandbox_* run untrusted code in WebAssembly sandboxes (quick runs, or persistent sandboxes with snapshots, restore and fork); ' +
  'peers_list, models_*, events_* and storage_* reach the node\'s peers, models, signed events and object storage. Every call acts with the data dir\'s admin token (or the one `bkg mcp` was given). ' +
  'Tool errors come as isError results whose text is {"error":{"code","message"}}; node_unreachable means the node is not running.'

const DEFAULT_CALL_IDLE_TIMEOUT_MS = 60 * 60_000
const LIST_TIMEOUT_MS = 30_000
/** errors of a connection that never reached the node: a call failing so is safe to send again */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH'])

/** The PeerIds a server certificate names (URI SANs `bkg:peer:<PeerId>`). */
function peerIdsOf (cert: PeerCertificate): string[] {
  return (cert.subjectaltname ?? '').split(', ')
    .filter((name) => name.startsWith(`URI:${PEER_URI_PREFIX}`))
    .map((name) => name.slice(`URI:${PEER_URI_PREFIX}`.length))
}

/** node:https options that trust the node as the CLI does (requestNode): the operator CA, the pinned PeerId, the client certificate. */
function tlsOptions (tls: ProxyTls, host: string): https.RequestOptions {
  const options: https.RequestOptions = {}
  // pinned to a PeerId, only the operator CA may vouch for it; otherwise the system roots too
  if (tls.caPem != null) options.ca = tls.peerId != null ? [tls.caPem] : [...rootCertificates, tls.caPem]
  if (tls.peerId != null) {
    const expected = tls.peerId
    options.checkServerIdentity = (_host, cert) => peerIdsOf(cert).includes(expected)
      ? undefined
      : new Error(`the certificate at ${host} is not node ${expected}'s (it names ${peerIdsOf(cert).join(', ') || 'no PeerId'})`)
  }
  if (tls.certPem != null && tls.keyPem != null) {
    options.cert = tls.certPem
    options.key = tls.keyPem
  }
  return options
}

/** The node could not be found (`url` null: the resolver's own message) or a request to it got no answer (connection, TLS). */
class NodeUnreachable extends Error {
  readonly code: string | undefined
  readonly url: string | null
  constructor (url: string | null, cause: Error & { code?: string }) {
    super(url == null ? cause.message : `cannot reach the node at ${url}: ${cause.message}`, { cause })
    this.code = cause.code
    this.url = url
  }
}

/**
 * fetch() over node:http(s), for the SDK's transport: the global fetch takes no TLS options (a
 * CA, a PeerId check, a client certificate), and undici's Agent is not a dependency. Streams the
 * response body (the node answers a call with progress as SSE); aborting the signal destroys the
 * request, which is how a 2026-07-28 call is cancelled on the node.
 */
function nodeFetch (tls: ProxyTls | undefined, agents: { http: http.Agent, https: https.Agent }): FetchLike {
  return async (input, init = {}) => {
    const url = new URL(input)
    const secure = url.protocol === 'https:'
    if (!secure && url.protocol !== 'http:') throw new TypeError(`fetch: ${url.protocol} URLs are not supported`)
    const signal = init.signal ?? undefined
    signal?.throwIfAborted()
    const headers: Record<string, string> = {}
    new Headers(init.headers).forEach((value, name) => { headers[name] = value })
    const body = init.body == null ? undefined : Buffer.from(await new Response(init.body).arrayBuffer())
    if (body != null) headers['content-length'] = String(body.length)
    const options: https.RequestOptions = {
      method: init.method ?? 'GET',
      headers,
      agent: secure ? agents.https : agents.http,
      ...(secure && tls != null ? tlsOptions(tls, url.host) : {})
    }
    return await new Promise<Response>((resolve, reject) => {
      const request = (secure ? https : http).request(url, options, (response) => {
        const status = response.statusCode ?? 502
        const responseHeaders = new Headers()
        for (let i = 0; i + 1 < response.rawHeaders.length; i += 2) responseHeaders.append(response.rawHeaders[i], response.rawHeaders[i + 1])
        const noBody = [101, 103, 204, 205, 304].includes(status) || options.method === 'HEAD'
        if (noBody) response.resume()
        response.once('close', () => signal?.removeEventListener('abort', onAbort))
        resolve(new Response(noBody ? null : Readable.toWeb(response) as ReadableStream<Uint8Array>, { status, statusText: response.statusMessage, headers: responseHeaders }))
      })
      const onAbort = (): void => {
        const reason: unknown = signal?.reason ?? new DOMException('This operation was aborted', 'AbortError')
        request.destroy(reason instanceof Error ? reason : new DOMException(String(reason), 'AbortError'))
        reject(reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      request.once('error', (err) => {
        signal?.removeEventListener('abort', onAbort)
        reject(signal?.aborted === true ? signal.reason : new NodeUnreachable(url.origin, err))
      })
      request.end(body)
    })
  }
}

interface Link {
  target: ProxyTarget
  client: Client
  agents: { http: http.Agent, https: https.Agent }
}

/** What went wrong with a node request, for the caller. */
interface Failure {
  /** a JSON-RPC error the node answered: passed on as it is */
  protocol?: ProtocolError
  code: string
  message: string
  /** the connection is of no more use: resolve the node again next time */
  drop: boolean
  /** the request never reached the node, so sending it again is safe */
  notSent: boolean
}

function causes (err: unknown): unknown[] {
  const chain: unknown[] = []
  for (let current = err; current != null && chain.length < 8; current = (current as { cause?: unknown }).cause) chain.push(current)
  return chain
}

/**
 * The node's MCP server as a client sees it, reached lazily: the first request resolves the
 * node and connects (2026-07-28, one stateless POST per request); a failure to reach it drops the
 * connection, so the next request finds the node again.
 */
class NodeLink {
  private linking: Promise<Link> | null = null
  /** what `linking` resolved to */
  private current: Link | null = null
  private tools: Promise<Tool[]> | null = null
  private closed = false
  private readonly options: McpStdioProxyOptions
  private readonly log: (line: string) => void
  private readonly live = new Set<Link>()

  constructor (options: McpStdioProxyOptions, log: (line: string) => void) {
    this.options = options
    this.log = log
  }

  private async connect (): Promise<Link> {
    let target: ProxyTarget
    try {
      target = await this.options.resolve()
    } catch (err) {
      throw new NodeUnreachable(null, err as Error)
    }
    const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) }
    const transport = new StreamableHTTPClientTransport(new URL(`${target.url}/mcp`), {
      fetch: nodeFetch(target.tls, agents),
      requestInit: { headers: { authorization: `Bearer ${target.token}` } },
      // the node never redirects; a proxy in front of it that does is not followed
      redirectPolicy: 'same-origin'
    })
    const client = new Client({ name: 'bkg-mcp-stdio', version: VERSION }, { versionNegotiation: { mode: { pin: MODERN_PROTOCOL_VERSION } } })
    const link: Link = { target, client, agents }
    try {
      await client.connect(transport, { timeout: LIST_TIMEOUT_MS })
    } catch (err) {
      this.dispose(link)
      throw err
    }
    if (this.closed) {
      this.dispose(link)
      throw new Error('bkg mcp is shutting down')
    }
    this.live.add(link)
    this.log(`connected to the node at ${target.url}`)
    return link
  }

  private async link (): Promise<Link> {
    if (this.closed) throw new Error('bkg mcp is shutting down')
    this.linking ??= this.connect()
    const linking = this.linking
    try {
      const link = await linking
      if (this.linking === linking) this.current = link
      return link
    } catch (err) {
      if (this.linking === linking) this.linking = null
      throw err
    }
  }

  /** forgets a connection that failed: the next request resolves the node again and lists its tools again */
  private drop (link: Link): void {
    if (this.current === link) {
      this.current = null
      this.linking = null
      this.tools = null
    }
    this.dispose(link)
  }

  private dispose (link: Link): void {
    this.live.delete(link)
    void link.client.close().catch(() => {})
    link.agents.http.destroy()
    link.agents.https.destroy()
  }

  describe (err: unknown, link: Link | null): Failure {
    const chain = causes(err)
    const rpc = chain.find((e) => ClientProtocolError.isInstance(e))
    if (rpc != null) {
      return { protocol: new ProtocolError(rpc.code, rpc.message, rpc.data), code: 'protocol_error', message: rpc.message, drop: false, notSent: false }
    }
    const unreachable = chain.find((e): e is NodeUnreachable => e instanceof NodeUnreachable)
    if (unreachable != null) {
      const hint = unreachable.url == null || this.options.hint == null ? '' : `; ${this.options.hint}`
      return { code: 'node_unreachable', message: `${unreachable.message}${hint}`, drop: true, notSent: unreachable.code != null && NOT_SENT.has(unreachable.code) }
    }
    const status = (chain.find((e) => SdkError.isInstance(e) && typeof (e.data as { status?: unknown } | undefined)?.status === 'number') as SdkError | undefined)?.data as { status: number } | undefined
    const first = chain[0] as Error | undefined
    const url = link?.target.url ?? 'the node'
    if (status?.status === 401) {
      return { code: 'unauthorized', message: `the node at ${url} refused the token (401): pass a valid --token, or use the data dir's own node`, drop: true, notSent: true }
    }
    if (status != null) {
      return { code: 'node_error', message: `the node at ${url} answered HTTP ${status.status}: ${first?.message ?? ''}`, drop: true, notSent: false }
    }
    if (SdkError.isInstance(first) && first.code === SdkErrorCode.NotConnected) {
      return { code: 'node_unreachable', message: `the connection to the node at ${url} is closed`, drop: true, notSent: true }
    }
    if (SdkError.isInstance(first) && first.code === SdkErrorCode.RequestTimeout) {
      return { code: 'timeout', message: `the node at ${url} did not answer in time: ${first.message}`, drop: false, notSent: false }
    }
    return { code: 'node_error', message: `the request to the node at ${url} failed: ${first?.message ?? String(err)}`, drop: true, notSent: false }
  }

  /**
   * Runs `fn` on the connection; a connection that was already open and turns out dead (the
   * node restarted, maybe on another port) is dropped and, when the request never left, the
   * request is sent once more on a fresh one.
   */
  private async withLink<T> (what: string, fn: (link: Link) => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const reused = this.linking != null
      let link: Link | null = null
      try {
        link = await this.link()
        return await fn(link)
      } catch (err) {
        if (signal?.aborted === true) throw err
        const failure = this.describe(err, link)
        if (failure.protocol != null) throw failure.protocol
        if (failure.drop && link != null) this.drop(link)
        if (failure.drop && link == null) this.tools = null
        if (reused && failure.notSent && attempt === 0) continue
        this.log(`${what}: ${failure.message}`)
        throw Object.assign(new Error(failure.message), { failure })
      }
    }
  }

  async listTools (): Promise<Tool[]> {
    this.tools ??= this.withLink('tools/list', async (link) => (await link.client.listTools(undefined, { timeout: LIST_TIMEOUT_MS })).tools)
    const tools = this.tools
    try {
      return await tools
    } catch (err) {
      if (this.tools === tools) this.tools = null
      throw err
    }
  }

  async callTool (name: string, args: Record<string, unknown> | undefined, signal: AbortSignal, onprogress?: (progress: Progress) => void): Promise<Record<string, unknown>> {
    return await this.withLink(`tools/call ${name}`, async (link) => await link.client.callTool({ name, ...(args != null ? { arguments: args } : {}) }, {
      signal,
      ...(onprogress != null ? { onprogress } : {}),
      timeout: this.options.callIdleTimeoutMs ?? DEFAULT_CALL_IDLE_TIMEOUT_MS,
      resetTimeoutOnProgress: true
    }) as Record<string, unknown>, signal)
  }

  close (): void {
    this.closed = true
    this.linking = null
    this.current = null
    this.tools = null
    for (const link of this.live) this.dispose(link)
  }
}

/** a node's result as this connection's own: without the node's envelope bits (the served era adds its own) */
function ownResult (result: Record<string, unknown>): CallToolResult {
  const { _meta: meta, resultType: _resultType, ttlMs: _ttl, cacheScope: _scope, ...rest } = result
  const ownMeta = meta != null && typeof meta === 'object' ? Object.fromEntries(Object.entries(meta).filter(([key]) => key !== SERVER_INFO_META_KEY)) : {}
  return { ...rest, ...(Object.keys(ownMeta).length > 0 ? { _meta: ownMeta } : {}) } as CallToolResult
}

function proxyServer (link: NodeLink): Server {
  const server = new Server({ name: 'bkg', title: 'BKG node (bkg mcp)', version: VERSION }, { capabilities: { tools: { listChanged: false } }, instructions: INSTRUCTIONS })
  server.setRequestHandler('tools/list', async () => {
    try {
      return { tools: await link.listTools() }
    } catch (err) {
      if (err instanceof ProtocolError) throw err
      throw new ProtocolError(ProtocolErrorCode.InternalError, (err as Error).message)
    }
  })
  server.setRequestHandler('tools/call', async (request, ctx: ServerContext) => {
    const { name, arguments: args } = request.params
    const token = ctx.mcpReq._meta?.progressToken
    const onprogress = typeof token === 'string' || typeof token === 'number'
      ? (progress: Progress) => {
          if (ctx.mcpReq.signal.aborted) return
          ctx.mcpReq.notify({ method: 'notifications/progress', params: { ...progress, progressToken: token } }).catch(() => {})
        }
      : undefined
    try {
      return ownResult(await link.callTool(name, args, ctx.mcpReq.signal, onprogress))
    } catch (err) {
      if (err instanceof ProtocolError) throw err
      const failure = (err as { failure?: Failure }).failure
      // cancelled: the answer is discarded anyway
      if (failure == null) throw err
      return toolError(failure.code, failure.message)
    }
  })
  return server
}

/**
 * `bkg mcp`: MCP over this process's stdin/stdout (both protocol eras; the first message decides)
 * in front of a running node's `/mcp`, so the client gets exactly the node's tools, each call
 * made with the target's token. tools/list is fetched from the node once and kept (fetched again
 * after a failure); tools/call is forwarded with its progress (the caller's progressToken) and
 * cancellation (the stdio request's abort closes the node request's stream); the node's results
 * and tool errors come back unchanged, its JSON-RPC errors as the same errors. A node that cannot
 * be reached is a tool error `node_unreachable` (and a line on stderr), never a crash.
 *
 * Start-up does nothing but wait for stdin: the node is resolved and connected on the first
 * request, so a client that starts the command to probe it and kills it (the v2 client does, in
 * `auto` negotiation) costs nothing.
 */
export function serveMcpStdioProxy (options: McpStdioProxyOptions): McpStdioProxyHandle {
  const log = options.log ?? ((line: string) => { process.stderr.write(`bkg mcp: ${line}\n`) })
  const link = new NodeLink(options, log)
  let end!: () => void
  const ended = new Promise<void>((resolve) => { end = resolve })
  const handle = serveStdio(() => proxyServer(link), {
    ...(options.transport != null ? { transport: options.transport } : {}),
    onerror: (err) => { log(err.message) }
  })
  let closing: Promise<void> | null = null
  const close = async (): Promise<void> => {
    closing ??= (async () => {
      link.close()
      await handle.close().catch(() => {})
      end()
    })()
    await closing
  }
  if (options.transport == null) {
    process.stdin.once('end', () => { void close() })
    process.stdin.once('close', () => { void close() })
  }
  return { ended, close }
}
