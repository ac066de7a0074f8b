/**
 * Subject alternative names an operator signs into a node certificate beside its PeerId URI: the
 * DNS names and IP addresses by which clients reach the node's HTTPS API. TLS clients (curl,
 * browsers, Node) check the host they dialled against these; the PeerId URI means nothing to them.
 */
import { isIP } from 'node:net'
import { CaError } from './errors.ts'

export interface SubjectAltName {
  type: 'DNS' | 'IP'
  /** DNS: lowercase name; IP: canonical text (IPv6 compressed, lowercase) */
  value: string
}

/** More would only bloat every certificate exchange: a node is reached by a handful of names. */
export const MAX_SUBJECT_ALT_NAMES = 32

/**
 * Names that mean "this machine" and so vouch for nothing beyond it: signed into every node
 * certificate by default, so local clients (curl on the node's host, the CLI, health checks) can
 * verify its HTTPS API without the operator naming them.
 */
export const LOOPBACK_SUBJECT_ALT_NAMES: readonly SubjectAltName[] = [
  { type: 'DNS', value: 'localhost' },
  { type: 'IP', value: '127.0.0.1' },
  { type: 'IP', value: '::1' }
]

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

function invalid (entry: string, why: string): CaError {
  return new CaError('invalid_san',
    `invalid subject alternative name ${JSON.stringify(entry)}: ${why} (expected DNS:<host name> or IP:<address>, e.g. DNS:node1.example,IP:10.0.0.5)`)
}

function parseDnsName (entry: string, raw: string): string {
  const name = raw.toLowerCase()
  if (name === '') throw invalid(entry, 'empty name')
  if (isIP(name) !== 0) throw invalid(entry, 'an address belongs in IP:, not DNS:')
  if (name.length > 253) throw invalid(entry, 'longer than 253 characters')
  const labels = name.split('.')
  for (const [i, label] of labels.entries()) {
    // a wildcard is only meaningful (RFC 6125) as the whole leftmost label of a longer name
    if (label === '*' && i === 0 && labels.length > 2) continue
    if (!DNS_LABEL.test(label)) {
      throw invalid(entry, `label ${JSON.stringify(label)} is not 1-63 of a-z, 0-9 and inner hyphens`)
    }
  }
  return name
}

/** The 16 bytes of an IPv6 address that isIP() accepted (zone ids refused by the caller). */
function ipv6Bytes (text: string): Buffer {
  let address = text
  const tail: number[] = []
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(address)
  if (v4 !== null) {
    tail.push(...v4[1].split('.').map(Number))
    // the embedded IPv4 address takes the place of the last two groups
    address = address.slice(0, -v4[1].length) + '0:0'
  }
  const [head, rest] = address.includes('::') ? address.split('::') : [address, null]
  const headGroups = head === '' ? [] : head.split(':')
  const restGroups = rest === null || rest === '' ? [] : rest.split(':')
  const fill = rest === null ? [] : new Array<string>(8 - headGroups.length - restGroups.length).fill('0')
  const groups = [...headGroups, ...fill, ...restGroups]
  const bytes = Buffer.alloc(16)
  groups.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2))
  if (tail.length === 4) Buffer.from(tail).copy(bytes, 12)
  return bytes
}

function ipv6Text (bytes: Uint8Array): string {
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[i * 2] << 8) | bytes[i * 2 + 1]).toString(16))
  // RFC 5952: compress the longest run (of two or more) of zero groups, the first one on a tie
  let best = -1
  let bestLength = 1
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue }
    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > bestLength) { best = i; bestLength = j - i }
    i = j
  }
  if (best === -1) return groups.join(':')
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`
}

/** The address bytes of an IP SAN (4 or 16), as they go into the certificate. */
export function ipAddressBytes (address: string): Buffer {
  return isIP(address) === 4 ? Buffer.from(address.split('.').map(Number)) : ipv6Bytes(address)
}

/** The text of the address bytes of an IP SAN, or null when they are neither 4 nor 16 bytes. */
export function ipAddressText (bytes: Uint8Array): string | null {
  if (bytes.length === 4) return Array.from(bytes).join('.')
  if (bytes.length === 16) return ipv6Text(bytes)
  return null
}

function parseIpAddress (entry: string, raw: string): string {
  if (raw.includes('%')) throw invalid(entry, 'zone ids (%…) cannot go in a certificate')
  const version = isIP(raw)
  if (version === 0) throw invalid(entry, 'not an IPv4 or IPv6 address')
  return version === 4 ? raw : ipv6Text(ipv6Bytes(raw.toLowerCase()))
}

/**
 * Parses `DNS:name` and `IP:address` entries (a list, or comma-separated strings; the type is
 * case-insensitive). Returns them de-duplicated, in the order given. Throws CaError('invalid_san').
 */
export function parseSubjectAltNames (list: readonly string[] | string): SubjectAltName[] {
  const entries = (typeof list === 'string' ? [list] : list).flatMap((item) => {
    if (typeof item !== 'string') throw new TypeError(`expected a string, got ${typeof item}`)
    return item.split(',').map((part) => part.trim()).filter((part) => part !== '')
  })
  const out: SubjectAltName[] = []
  for (const entry of entries) {
    const colon = entry.indexOf(':')
    const type = colon === -1 ? '' : entry.slice(0, colon).toUpperCase()
    const raw = entry.slice(colon + 1)
    if (!/^[!-~]*$/.test(raw)) throw invalid(entry, 'only printable ASCII without spaces (write IDNs in their xn-- form)')
    let san: SubjectAltName
    if (type === 'DNS') san = { type, value: parseDnsName(entry, raw) }
    else if (type === 'IP') san = { type, value: parseIpAddress(entry, raw) }
    else throw invalid(entry, colon === -1 ? 'no type prefix' : `unsupported type ${JSON.stringify(entry.slice(0, colon))}`)
    if (!out.some((known) => known.type === san.type && known.value === san.value)) out.push(san)
  }
  if (out.length > MAX_SUBJECT_ALT_NAMES) {
    throw new CaError('invalid_san', `too many subject alternative names (${out.length}): at most ${MAX_SUBJECT_ALT_NAMES}`)
  }
  return out
}

/** `DNS:name` / `IP:address`, the form `bkg ca sign --san` takes. */
export function formatSubjectAltName (san: SubjectAltName): string {
  return `${san.type}:${san.value}`
}
