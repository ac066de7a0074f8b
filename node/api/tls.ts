/**
 * HTTPS for the node's API. Loopback stays plain HTTP (only this machine can connect); any other
 * address is served over TLS with the node's own certificate (node.crt and the RSA key it
 * certifies, node-x509.key), which chains to the operator CA, so clients verify it with ca.crt.
 * Optionally, admin routes also need a client certificate from the operator CA with the admin role.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { BlockList, isIP } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { FastifyRequest } from 'fastify'
import { CaError, verifyNodeCertificate } from '../../ca/index.ts'
import type { Trust } from '../admission/index.ts'
import type { DataDirPaths } from '../identity/index.ts'
import { BkgError } from '../../lib/bkg-error.ts'

export interface ApiTlsSettings {
  /** 'auto': TLS beyond loopback only (`--api-tls` = true, `--no-api-tls` = false) */
  enabled: boolean | 'auto'
  /** plain HTTP beyond loopback, knowingly (`--api-insecure`) */
  insecure: boolean
  /** admin routes need an operator-CA client certificate with the admin role (`--api-admin-mtls`) */
  adminMtls: boolean
}

export interface ApiTransport {
  tls: boolean
  adminMtls: boolean
  loopback: boolean
}

/** The API cannot be served as configured (a refusal, not a crash: the CLI prints one line). */
export class ApiTransportError extends BkgError {
  declare readonly code: 'api_tls_required' | 'api_tls_conflict' | 'api_tls_unavailable'
  constructor (code: ApiTransportError['code'], message: string) {
    super(code, 500, message)
  }
}

const loopbackRanges = new BlockList()
loopbackRanges.addSubnet('127.0.0.0', 8, 'ipv4')
loopbackRanges.addAddress('::1', 'ipv6')

/**
 * Whether only this machine can reach an address: 127.0.0.0/8, ::1 (also IPv4-mapped) and
 * `localhost`. Anything else, including the wildcards 0.0.0.0 and ::, and any other host name
 * (not resolved: what it points at can change), counts as reachable from elsewhere.
 */
export function isLoopbackHost (host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase()
  if (bare === 'localhost') return true
  const version = isIP(bare)
  if (version === 0) return false
  return loopbackRanges.check(bare, version === 4 ? 'ipv4' : 'ipv6')
}

/** Splits HOST:PORT (IPv6 hosts in brackets) as `--api` takes it. */
export function splitHostPort (hostPort: string): { host: string, port: number } {
  const separator = hostPort.lastIndexOf(':')
  return { host: hostPort.slice(0, separator).replace(/^\[|\]$/g, ''), port: Number(hostPort.slice(separator + 1)) }
}

/**
 * Decides how the API is served on `hostPort`. Throws ApiTransportError for plain HTTP beyond
 * loopback without `insecure`, and for settings that contradict each other.
 */
export function decideApiTransport (hostPort: string, settings: ApiTlsSettings): ApiTransport {
  const { host } = splitHostPort(hostPort)
  const loopback = isLoopbackHost(host)
  if (settings.enabled === true && settings.insecure) {
    throw new ApiTransportError('api_tls_conflict', '--api-tls and --api-insecure contradict each other: give one of them')
  }
  const tls = settings.enabled === 'auto'
    ? settings.adminMtls || (!loopback && !settings.insecure)
    : settings.enabled
  if (settings.adminMtls && (!tls || settings.insecure)) {
    throw new ApiTransportError('api_tls_conflict', '--api-admin-mtls needs TLS: drop --no-api-tls / --api-insecure')
  }
  if (!tls && !loopback && !settings.insecure) {
    throw new ApiTransportError('api_tls_required',
      `refusing to serve the API on ${hostPort} over plain HTTP: tokens would cross the network in the clear; ` +
      'serve it over TLS (the default beyond loopback) or pass --api-insecure if something else encrypts the traffic')
  }
  return { tls, adminMtls: settings.adminMtls, loopback }
}

/** What node:https needs to serve the API with the node's certificate. */
export interface ApiTlsOptions {
  /** PKCS#8 PEM (node:tls takes no KeyObject) */
  key: string
  cert: string
  /** with admin mTLS: ask for a client certificate (never demanded at the TLS layer) */
  requestCert: boolean
  rejectUnauthorized: false
  ca?: string
}

/**
 * Loads node-x509.key, checks that node.crt certifies it, and returns the server options.
 * Throws ApiTransportError('api_tls_unavailable') when the key is missing or does not match.
 */
export async function loadApiTlsOptions (paths: DataDirPaths, trust: Trust, transport: ApiTransport): Promise<ApiTlsOptions> {
  let keyPem: string
  let key: KeyObject
  try {
    keyPem = await readFile(paths.x509Key, 'utf8')
    key = createPrivateKey(keyPem)
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT'
    throw new ApiTransportError('api_tls_unavailable',
      `HTTPS for the API needs the key node.crt certifies, ${paths.x509Key}, which ${missing ? 'is missing' : `cannot be read (${(err as Error).message})`}; ` +
      `\`bkg init --data ${paths.dir}\` makes it with node.csr (then have node.csr signed again)`)
  }
  if (!new X509Certificate(trust.certPem).checkPrivateKey(key)) {
    throw new ApiTransportError('api_tls_unavailable',
      `node.crt does not certify ${paths.x509Key} (was \`bkg init\` run again after signing?): have the operator sign the current node.csr`)
  }
  return {
    key: keyPem,
    cert: trust.certPem,
    requestCert: transport.adminMtls,
    // the auth hook decides per route: public and token routes must work without a client certificate
    rejectUnauthorized: false,
    ...(transport.adminMtls ? { ca: trust.caPem } : {})
  }
}

/**
 * The admin-route check of `--api-admin-mtls`: the connection must carry a client certificate the
 * operator CA issued (checked again here like a peer's: expiry, the node's current CRL) with the
 * admin role. Throws BkgError 403.
 */
export function requireAdminClientCertificate (request: FastifyRequest, trust: Trust): void {
  const socket = request.raw.socket
  const peer = socket instanceof TLSSocket ? socket.getPeerCertificate() : null
  if (peer == null || peer.raw == null) {
    throw new BkgError('client_cert_required', 403,
      'this admin route needs a TLS client certificate from the operator CA with the admin role (the node runs with --api-admin-mtls)')
  }
  const pem = new X509Certificate(peer.raw).toString()
  let roles: string[]
  try {
    roles = verifyNodeCertificate(pem, { caPem: trust.caPem, crl: trust.crl, now: new Date() }).roles
  } catch (err) {
    if (!(err instanceof CaError)) throw err
    throw new BkgError('client_cert_refused', 403, `the client certificate was refused: ${err.message}`)
  }
  if (!roles.includes('admin')) {
    throw new BkgError('client_cert_refused', 403, `the client certificate does not carry the admin role (roles: ${roles.join(',') || 'none'})`)
  }
}
