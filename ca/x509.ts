/**
 * Glue between node:crypto, node-forge and raw DER shared by the CA modules:
 * RSA key generation, serial numbers, names, PEM and string extensions.
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import forge from 'node-forge'
import { childrenOf, readSingleTlv, TAG_SEQUENCE, tlvBytes, type Tlv } from './der.ts'
import { OID_COMMON_NAME, OID_NAMESPACES, OID_PEER_KEY_PROOF, OID_ROLES } from './oids.ts'

export { forge }

/** forge.pki functions that exist at runtime but are missing from @types/node-forge. */
export const forgePkiExtra = forge.pki as unknown as {
  getTBSCertificate: (cert: forge.pki.Certificate) => forge.asn1.Asn1
  getCertificationRequestInfo: (csr: forge.pki.CertificateSigningRequest) => forge.asn1.Asn1
  RDNAttributesAsArray: (rdn: forge.asn1.Asn1) => forge.pki.CertificateField[]
}

const UTF8 = forge.asn1.Type.UTF8

export interface RsaKeyMaterial {
  privateKeyPem: string
  publicKeyPem: string
  /** DER SubjectPublicKeyInfo */
  spkiDer: Buffer
  privateKey: forge.pki.rsa.PrivateKey
  publicKey: forge.pki.rsa.PublicKey
}

/** RSA-2048 via node:crypto (forge's pure-JS keygen takes seconds), loaded into forge. */
export function generateRsaKey (): RsaKeyMaterial {
  const { privateKey: privateKeyPem, publicKey: publicKeyPem } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicExponent: 0x10001,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' }
  })
  const spkiDer = createPublicKey(publicKeyPem).export({ type: 'spki', format: 'der' })
  return {
    privateKeyPem,
    publicKeyPem,
    spkiDer,
    privateKey: forge.pki.privateKeyFromPem(privateKeyPem),
    publicKey: forge.pki.publicKeyFromPem(publicKeyPem)
  }
}

/** 16 random bytes as a positive, minimally encoded DER INTEGER (lowercase hex). */
export function randomSerialHex (): string {
  const bytes = randomBytes(16)
  bytes[0] &= 0x7f
  if (bytes[0] === 0) bytes[0] = 0x01
  return bytes.toString('hex')
}

/**
 * Canonical form of a serial number: lowercase hex, no colons or spaces,
 * leading zero octets stripped (forge and openssl may print a `00` sign octet).
 * Returns null when the input is not hex.
 */
export function normalizeSerial (serial: string): string | null {
  if (typeof serial !== 'string') return null
  let hex = serial.trim().replace(/^0x/i, '').replace(/[:\s]/g, '').toLowerCase()
  if (hex === '' || !/^[0-9a-f]+$/.test(hex)) return null
  if (hex.length % 2 === 1) hex = '0' + hex
  while (hex.length > 2 && hex.startsWith('00')) hex = hex.slice(2)
  return hex
}

/** Binary string (forge's byte representation) to Buffer and back. */
export function toBuffer (bytes: string): Buffer {
  return Buffer.from(bytes, 'binary')
}
export function toBinary (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('binary')
}

/** Subject/issuer attributes for `CN=<cn>[, O=<o>]`, UTF8String-encoded. */
export function nameAttributes (cn: string, o?: string): forge.pki.CertificateField[] {
  const attrs: forge.pki.CertificateField[] = [
    { shortName: 'CN', value: cn, valueTagClass: UTF8 as unknown as forge.asn1.Class }
  ]
  if (o !== undefined) {
    attrs.push({ shortName: 'O', value: o, valueTagClass: UTF8 as unknown as forge.asn1.Class })
  }
  return attrs
}

/** The text of a parsed name attribute (forge leaves UTF8String values as raw UTF-8 bytes). */
export function attributeText (attr: forge.pki.CertificateField): string {
  const value = attr.value
  if (typeof value !== 'string') return ''
  if ((attr.valueTagClass as unknown as number) === UTF8) {
    try {
      return forge.util.decodeUtf8(value)
    } catch {
      // a name that is not valid UTF-8 must not make the whole certificate unreadable: its signature still vouches for the bytes
      return value
    }
  }
  return value
}

/**
 * Parsed attributes turned back into attributes forge can re-encode to the
 * same bytes (forge would UTF-8 encode a parsed UTF8String value twice).
 */
export function reencodableAttributes (attrs: forge.pki.CertificateField[]): forge.pki.CertificateField[] {
  return attrs.map(attr => ({
    type: attr.type,
    value: attributeText(attr),
    valueTagClass: attr.valueTagClass
  }))
}

/** The common name of a parsed subject or issuer, or '' when there is none. */
export function commonNameOf (dn: { attributes: forge.pki.CertificateField[] }): string {
  const attr = dn.attributes.find(a => a.type === OID_COMMON_NAME)
  return attr === undefined ? '' : attributeText(attr)
}

/**
 * Decodes the first PEM block with one of the given labels into DER.
 * Throws a plain Error on anything else.
 */
export function pemToDer (pem: string, labels: readonly string[]): Buffer {
  if (typeof pem !== 'string') throw new Error('expected a PEM string')
  if (pem.length > 1_000_000) throw new Error('PEM input too large')
  const blocks = forge.pem.decode(pem)
  const block = blocks.find(b => labels.includes(b.type))
  if (block === undefined) {
    throw new Error(`no ${labels[0]} PEM block found`)
  }
  if (block.procType !== null && block.procType !== undefined) {
    throw new Error('encrypted PEM blocks are not supported')
  }
  const der = toBuffer(block.body)
  if (der.length === 0) throw new Error('empty PEM block')
  return der
}

export function derToPem (der: Uint8Array, label: string): string {
  return forge.pem.encode({ type: label, body: toBinary(der) }, { maxline: 64 }).replace(/\r\n/g, '\n')
}

// ---------------------------------------------------------------- OIDs forge cannot handle

/** DER content octets of an OID (arbitrary-size arcs, unlike forge's 32-bit limit). */
export function encodeOidContent (oid: string): Buffer {
  const arcs = oid.split('.').map(a => {
    if (!/^\d+$/.test(a)) throw new Error(`invalid OID ${oid}`)
    return BigInt(a)
  })
  if (arcs.length < 2 || arcs[0] > 2n || (arcs[0] < 2n && arcs[1] > 39n)) throw new Error(`invalid OID ${oid}`)
  const subs = [arcs[0] * 40n + arcs[1], ...arcs.slice(2)]
  const out: number[] = []
  for (let value of subs) {
    const groups: number[] = [Number(value & 0x7fn)]
    value >>= 7n
    while (value > 0n) {
      groups.push(Number(value & 0x7fn) | 0x80)
      value >>= 7n
    }
    out.push(...groups.reverse())
  }
  return Buffer.from(out)
}

/** Inverse of encodeOidContent. Throws on a malformed encoding. */
export function decodeOidContent (bytes: Uint8Array): string {
  if (bytes.length === 0 || (bytes[bytes.length - 1] & 0x80) !== 0) throw new Error('malformed OID')
  const subs: bigint[] = []
  let value = 0n
  let started = false
  for (const b of bytes) {
    if (!started && b === 0x80) throw new Error('non-minimal OID encoding')
    started = true
    value = (value << 7n) | BigInt(b & 0x7f)
    if ((b & 0x80) === 0) {
      subs.push(value)
      value = 0n
      started = false
    }
  }
  const first = subs[0]
  const head = first < 80n ? [first / 40n, first % 40n] : [2n, first - 80n]
  return [...head, ...subs.slice(1)].join('.')
}

/*
 * forge cannot encode OID arcs above 2^32 nor parse them above 2^53, and the
 * BKG extension OIDs sit under 2.25.<128-bit UUID>. Inside forge they are
 * replaced by stand-ins under 1.3.6.1.4.1.0 (IANA enterprise number 0 is
 * reserved, so no real OID lives there), and swapped back in the DER.
 */
const STAND_INS: ReadonlyArray<readonly [real: string, standIn: string]> = [
  [OID_PEER_KEY_PROOF, '1.3.6.1.4.1.0.4242.1'],
  [OID_ROLES, '1.3.6.1.4.1.0.4242.2'],
  [OID_NAMESPACES, '1.3.6.1.4.1.0.4242.3']
]
const REAL_TO_STAND_IN = new Map(STAND_INS.map(([real, standIn]) =>
  [toBinary(encodeOidContent(real)), forge.asn1.oidToDer(standIn).getBytes()]))
const STAND_IN_TO_REAL = new Map([...REAL_TO_STAND_IN].map(([real, standIn]) => [standIn, real]))

/** The OID to use for a BKG extension in objects handed to forge. */
export function forgeOid (oid: string): string {
  const pair = STAND_INS.find(([real]) => real === oid)
  return pair === undefined ? oid : pair[1]
}

function swapOids (obj: forge.asn1.Asn1, table: Map<string, string>, reject: Map<string, string> | null): void {
  // BIT STRING contents (keys, signatures) are opaque: forge may have decoded them speculatively
  if (obj.tagClass === forge.asn1.Class.UNIVERSAL && obj.type === forge.asn1.Type.BITSTRING) return
  if (Array.isArray(obj.value)) {
    for (const child of obj.value) swapOids(child, table, reject)
    return
  }
  if (obj.tagClass !== forge.asn1.Class.UNIVERSAL || obj.type !== forge.asn1.Type.OID || typeof obj.value !== 'string') return
  if (reject?.has(obj.value) === true) throw new Error('reserved stand-in OID in input')
  const swapped = table.get(obj.value)
  if (swapped !== undefined) obj.value = swapped
}

/** Parses DER with forge, strictly, with BKG extension OIDs replaced by their forge stand-ins. */
export function forgeAsn1FromDer (der: Uint8Array): forge.asn1.Asn1 {
  const obj = forge.asn1.fromDer(toBinary(der), {
    strict: true, parseAllBytes: true, decodeBitStrings: true
  } as unknown as boolean)
  swapOids(obj, REAL_TO_STAND_IN, STAND_IN_TO_REAL)
  return obj
}

/** Serialises a forge ASN.1 tree, putting the real BKG extension OIDs back. */
export function forgeAsn1ToDer (obj: forge.asn1.Asn1): Buffer {
  swapOids(obj, STAND_IN_TO_REAL, null)
  return toBuffer(forge.asn1.toDer(obj).getBytes())
}

/**
 * Raw DER of a certificate's inner signature AlgorithmIdentifier and its
 * subject and issuer Names, sliced from the original encoding.
 */
export function certificateNames (der: Uint8Array): { signature: Uint8Array, issuer: Uint8Array, subject: Uint8Array } {
  const outer = readSingleTlv(der)
  if (outer.tag !== TAG_SEQUENCE) throw new Error('certificate is not a SEQUENCE')
  const [tbs] = childrenOf(der, outer)
  if (tbs === undefined || tbs.tag !== TAG_SEQUENCE) throw new Error('TBSCertificate is not a SEQUENCE')
  const fields: Tlv[] = childrenOf(der, tbs)
  // [0] EXPLICIT version is optional (absent for v1)
  const base = fields[0]?.tag === 0xa0 ? 1 : 0
  const signature = fields[base + 1]
  const issuer = fields[base + 2]
  const subject = fields[base + 4]
  if (signature === undefined || issuer === undefined || subject === undefined) throw new Error('TBSCertificate is truncated')
  return { signature: tlvBytes(der, signature), issuer: tlvBytes(der, issuer), subject: tlvBytes(der, subject) }
}

/** A non-critical extension value: DER UTF8String holding comma-separated values. */
export function utf8ListExtensionValue (values: readonly string[]): forge.asn1.Asn1 {
  return forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.UTF8, false,
    forge.util.encodeUtf8(values.join(',')))
}

/** Reads an extension value written by utf8ListExtensionValue. Throws on a malformed value. */
export function parseUtf8ListExtension (extnValue: string): string[] {
  const obj = forge.asn1.fromDer(extnValue, true)
  if (obj.tagClass !== forge.asn1.Class.UNIVERSAL || obj.type !== forge.asn1.Type.UTF8 ||
    obj.constructed || typeof obj.value !== 'string') {
    throw new Error('expected a UTF8String')
  }
  const text = forge.util.decodeUtf8(obj.value)
  return text.split(',').map(s => s.trim()).filter(s => s !== '')
}
