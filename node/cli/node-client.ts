import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { rootCertificates, type PeerCertificate } from 'node:tls'
import { PEER_URI_PREFIX } from '../../ca/index.ts'
import { dataDirPaths, type DataDirPaths } from '../identity/index.ts'
import { CliError } from './errors.ts'

/** How to trust (and be known to) a node's HTTPS API. */
export interface NodeTls {
  /** the operator CA (a data dir's ca.crt); without it the system's roots apply */
  caPem?: string
  /**
   * accept the server by the PeerId its certificate names instead of by host name: what the
   * data dir's api.json says its own node is, so certificates without loopback names still work
   */
  peerId?: string
  /** a client certificate and key, for admin routes behind --api-admin-mtls */
  certPem?: string
  keyPem?: string
}

export interface NodeTarget {
  url: string
  token: string
  tls?: NodeTls
}

export interface TargetOptions {
  data?: string
  api?: string
  token?: string
}

/** Finds a running node: `--api URL --token T` win, else the data dir's api.json and api-token. */
export async function resolveTarget (options: TargetOptions, defaultDataDir: string): Promise<NodeTarget> {
  const paths = dataDirPaths(options.data ?? defaultDataDir)
  let url = options.api
  let peerId: string | undefined
  if (url == null) {
    try {
      ({ url, peerId } = JSON.parse(await readFile(paths.apiAddress, 'utf8')) as { url: string, peerId?: string })
    } catch {
      throw new CliError(`no running node found for ${paths.dir} (no ${paths.apiAddress}); start it with \`bkg start --data ${paths.dir}\` or pass --api URL --token T`)
    }
  }
  let token = options.token ?? process.env.BKG_TOKEN
  if (token == null) {
    try {
      token = (await readFile(paths.apiToken, 'utf8')).trim()
    } catch {
      throw new CliError(`no API token: ${paths.apiToken} is missing; pass --token T`)
    }
  }
  return { url: url.replace(/\/$/, ''), token, tls: url.startsWith('https:') ? await tlsFromDataDir(paths, peerId) : undefined }
}

/**
 * Trust the data dir's ca.crt, and present its node.crt (with node-x509.key) as a client
 * certificate: the TLS server only asks for one under --api-admin-mtls, where a node certificate
 * with the admin role opens admin routes. BKG_CLIENT_CERT and BKG_CLIENT_KEY (PEM files) name
 * another identity, e.g. an operator's admin certificate.
 */
async function tlsFromDataDir (paths: DataDirPaths, peerId: string | undefined): Promise<NodeTls> {
  // a file that cannot be read is decided on below: required only when BKG_CLIENT_CERT names it
  const read = async (path: string): Promise<string | undefined> => await readFile(path, 'utf8').catch(() => undefined)
  const certPath = process.env.BKG_CLIENT_CERT ?? paths.cert
  const keyPath = process.env.BKG_CLIENT_KEY ?? paths.x509Key
  const [caPem, certPem, keyPem] = await Promise.all([read(paths.ca), read(certPath), read(keyPath)])
  if (process.env.BKG_CLIENT_CERT != null && (certPem == null || keyPem == null)) {
    throw new CliError(`cannot read the client certificate ${certPath} and key ${keyPath} (BKG_CLIENT_CERT, BKG_CLIENT_KEY)`)
  }
  return { caPem, peerId, ...(certPem != null && keyPem != null ? { certPem, keyPem } : {}) }
}

/** The PeerIds a server certificate names (URI SANs `bkg:peer:<PeerId>`). */
function peerIdsOf (cert: PeerCertificate): string[] {
  return (cert.subjectaltname ?? '').split(', ')
    .filter((name) => name.startsWith(`URI:${PEER_URI_PREFIX}`))
    .map((name) => name.slice(`URI:${PEER_URI_PREFIX}`.length))
}

export interface NodeRequest {
  method: string
  headers?: Record<string, string>
  body?: string | Readable
  /** a successful (2xx) response's text as it arrives, instead of all of it at the end */
  onText?: (text: string) => void
}

/** One HTTP(S) request with node:http(s), whose TLS options fetch() does not take. */
export async function requestNode (url: string, init: NodeRequest, tls: NodeTls = {}): Promise<{ status: number, headers: http.IncomingHttpHeaders, text: string }> {
  const target = new URL(url)
  const secure = target.protocol === 'https:'
  const options: https.RequestOptions = { method: init.method, headers: init.headers, agent: false }
  if (secure) {
    // pinned to a PeerId, only the operator CA may vouch for it; otherwise the system roots too
    // (a node behind a proxy with a public certificate)
    if (tls.caPem != null) options.ca = tls.peerId != null ? [tls.caPem] : [...rootCertificates, tls.caPem]
    if (tls.peerId != null) {
      const expected = tls.peerId
      options.checkServerIdentity = (_host, cert) => peerIdsOf(cert).includes(expected)
        ? undefined
        : new Error(`the certificate at ${target.host} is not node ${expected}'s (it names ${peerIdsOf(cert).join(', ') || 'no PeerId'})`)
    }
    if (tls.certPem != null && tls.keyPem != null) {
      options.cert = tls.certPem
      options.key = tls.keyPem
    }
  }
  return await new Promise((resolve, reject) => {
    const request = (secure ? https : http).request(target, options, (response) => {
      let text = ''
      response.setEncoding('utf8')
      const ok = (response.statusCode ?? 0) >= 200 && (response.statusCode ?? 0) < 300
      const onText = ok ? init.onText : undefined
      response.on('data', (chunk: string) => {
        if (onText != null) onText(chunk)
        else text += chunk
      })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, text }))
      response.on('error', reject)
    })
    request.on('error', reject)
    if (init.body == null || typeof init.body === 'string') request.end(init.body)
    else pipeline(init.body, request).catch(reject)
  })
}

export async function callNode<T> (target: NodeTarget, method: string, path: string, body?: unknown): Promise<T> {
  return await send<T>(target, method, path, body !== undefined
    ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
    : {})
}

/**
 * A JSON request whose answer is NDJSON (`Accept: application/x-ndjson`): `onLine` gets each
 * line's value as it arrives. A refusal before the stream began is thrown as by callNode.
 */
export async function streamNode (target: NodeTarget, method: string, path: string, body: unknown, onLine: (value: unknown) => void): Promise<void> {
  let pending = ''
  let broken: Error | undefined
  const onText = (text: string): void => {
    pending += text
    let newline: number
    while (broken == null && (newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline)
      pending = pending.slice(newline + 1)
      try {
        if (line.trim() !== '') onLine(JSON.parse(line))
      } catch (err) {
        // thrown here it would escape the response's event handler; it is thrown once the response ends
        broken = err as Error
      }
    }
  }
  await send<unknown>(target, method, path, {
    headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' },
    body: JSON.stringify(body),
    onText
  })
  if (broken != null) throw new CliError(`the node's stream could not be read: ${broken.message}`)
  if (pending.trim() !== '') onLine(JSON.parse(pending))
}

/** Streams a file as the request body (application/octet-stream), e.g. a model package. */
export async function uploadToNode<T> (target: NodeTarget, method: string, path: string, file: string): Promise<T> {
  const { size } = await stat(file)
  return await send<T>(target, method, path, {
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: createReadStream(file)
  })
}

async function send<T> (target: NodeTarget, method: string, path: string, init: { headers?: Record<string, string>, body?: string | Readable, onText?: (text: string) => void }): Promise<T> {
  let response: { status: number, text: string }
  try {
    response = await requestNode(`${target.url}${path}`, {
      method,
      body: init.body,
      onText: init.onText,
      headers: { authorization: `Bearer ${target.token}`, ...init.headers }
    }, target.tls)
  } catch (err) {
    throw new CliError(`cannot reach the node at ${target.url}: ${(err as Error).message}`)
  }
  const ok = response.status >= 200 && response.status < 300
  const text = response.text
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    // not JSON (a proxy's error page): the refusal below quotes the text instead
    json = undefined
  }
  if (!ok) {
    const error = (json as { error?: { code?: string, message?: string } } | undefined)?.error
    throw new CliError(`node refused (${response.status}${error?.code != null ? ` ${error.code}` : ''}): ${error?.message ?? text.slice(0, 200)}`)
  }
  return json as T
}
