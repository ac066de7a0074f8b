/**
 * X.509 v2 certificate revocation lists (RFC 5280 section 5).
 *
 * node-forge has no CRL support, so the CertificateList is built with
 * forge.asn1 and parsed with the small DER reader in der.ts (which also keeps
 * the exact signed bytes of the TBSCertList).
 */
import { loadTrustedCa } from './certificate.ts'
import type { ParsedCrl } from './parsed-crl.ts'
import {
  childrenOf, readSingleTlv, TAG_GENERALIZED_TIME, TAG_INTEGER, TAG_OCTET_STRING,
  TAG_OID, TAG_SEQUENCE, TAG_UTC_TIME, tlvBytes, tlvContent, type Tlv
} from './der.ts'
import { CaError, describeError } from './errors.ts'
import { OID_AUTHORITY_KEY_IDENTIFIER, OID_CRL_NUMBER, OID_SHA256_WITH_RSA } from './oids.ts'
import { assembleSigned, sha256WithRsaAlgorithm, splitSigned, verifySigned, type SignedParts } from './signed.ts'
import {
  commonNameOf, decodeOidContent, derToPem, forge, forgePkiExtra, normalizeSerial, pemToDer, toBinary, toBuffer
} from './x509.ts'

const DAY_MS = 24 * 60 * 60 * 1000
const CRL_PEM_LABEL = 'X509 CRL'

export interface RevokedEntry {
  serial: string
  revokedAt: Date
}

export interface CreateCrlOptions {
  caCertPem: string
  caKeyPem: string
  /** the cRLNumber: must grow with every CRL the CA issues */
  number: bigint | number
  revoked: readonly RevokedEntry[]
  thisUpdate?: Date
  /** default: thisUpdate + 7 days */
  nextUpdate?: Date
}

// ---------------------------------------------------------------- building

const { asn1 } = forge

function seq (items: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items)
}

function oid (id: string): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(id).getBytes())
}

/** A non-negative integer given as hex, as a minimal DER INTEGER. */
function integerFromHex (hex: string): forge.asn1.Asn1 {
  let h = hex.length % 2 === 1 ? '0' + hex : hex
  while (h.length > 2 && h.startsWith('00')) h = h.slice(2)
  if (parseInt(h[0], 16) >= 8) h = '00' + h
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, forge.util.hexToBytes(h))
}

/** RFC 5280: UTCTime for dates in 1950-2049, GeneralizedTime otherwise. */
function time (date: Date): forge.asn1.Asn1 {
  const year = date.getUTCFullYear()
  if (year >= 1950 && year < 2050) {
    return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(date))
  }
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(date))
}

function extension (id: string, value: forge.asn1.Asn1): forge.asn1.Asn1 {
  return seq([
    oid(id),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, asn1.toDer(value).getBytes())
  ])
}

function validDate (date: Date, what: string): Date {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) throw new TypeError(`${what} is not a valid date`)
  return date
}

/** Builds and signs a CRL (PEM, label `X509 CRL`). */
export function createCrl (options: CreateCrlOptions): string {
  const ca = loadTrustedCa(options.caCertPem)
  const number = BigInt(options.number)
  if (number < 0n) throw new RangeError('the CRL number must not be negative')
  const thisUpdate = validDate(options.thisUpdate ?? new Date(), 'thisUpdate')
  const nextUpdate = validDate(options.nextUpdate ?? new Date(thisUpdate.getTime() + 7 * DAY_MS), 'nextUpdate')
  if (nextUpdate.getTime() < thisUpdate.getTime()) throw new RangeError('nextUpdate is before thisUpdate')

  const algorithm = asn1.fromDer(toBinary(sha256WithRsaAlgorithm()), true)
  const issuer = asn1.fromDer(toBinary(ca.subjectDer), true)

  const fields: forge.asn1.Asn1[] = [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(1).getBytes()), // v2
    algorithm,
    issuer,
    time(thisUpdate),
    time(nextUpdate)
  ]

  if (options.revoked.length > 0) {
    const entries = options.revoked.map(entry => {
      const serial = normalizeSerial(entry.serial)
      if (serial === null) throw new CaError('serial_unknown', `invalid serial number ${JSON.stringify(entry.serial)}`)
      return seq([integerFromHex(serial), time(validDate(entry.revokedAt, 'revokedAt'))])
    })
    fields.push(seq(entries)) // RFC 5280: absent, not empty, when nothing is revoked
  }

  const extensions = [extension(OID_CRL_NUMBER, integerFromHex(number.toString(16)))]
  if (ca.keyIdentifier !== null) {
    extensions.push(extension(OID_AUTHORITY_KEY_IDENTIFIER, seq([
      asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, forge.util.hexToBytes(ca.keyIdentifier))
    ])))
  }
  fields.push(asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [seq(extensions)]))

  const tbs = toBuffer(asn1.toDer(seq(fields)).getBytes())
  let der: Buffer
  try {
    der = assembleSigned(tbs, options.caKeyPem)
  } catch (err) {
    throw new CaError('ca_missing', `cannot sign the CRL with the CA key: ${describeError(err)}`)
  }
  if (!verifySigned(splitSigned(der), ca.publicKey)) {
    throw new CaError('ca_missing', 'the CA key does not belong to the CA certificate')
  }
  return derToPem(der, CRL_PEM_LABEL)
}

// ---------------------------------------------------------------- parsing

interface DecodedCrl {
  parsed: ParsedCrl
  signed: SignedParts
  issuerDer: Uint8Array
  authorityKeyIdentifier: string | null
}

class Malformed extends Error {}

function expect (cond: boolean, message: string): asserts cond {
  if (!cond) throw new Malformed(message)
}

function readOid (der: Uint8Array, tlv: Tlv): string {
  expect(tlv.tag === TAG_OID && tlv.end > tlv.contentStart, 'expected an OBJECT IDENTIFIER')
  return decodeOidContent(tlvContent(der, tlv))
}

function readUnsigned (der: Uint8Array, tlv: Tlv, what: string): bigint {
  expect(tlv.tag === TAG_INTEGER && tlv.end > tlv.contentStart, `${what} is not an INTEGER`)
  const content = tlvContent(der, tlv)
  expect((content[0] & 0x80) === 0, `${what} is negative`)
  return BigInt('0x' + Buffer.from(content).toString('hex'))
}

function isTime (tlv: Tlv | undefined): boolean {
  return tlv !== undefined && (tlv.tag === TAG_UTC_TIME || tlv.tag === TAG_GENERALIZED_TIME)
}

function readTime (der: Uint8Array, tlv: Tlv | undefined, what: string): Date {
  expect(tlv !== undefined && isTime(tlv), `${what} is not a time`)
  const text = Buffer.from(tlvContent(der, tlv)).toString('latin1')
  let date: Date
  if (tlv.tag === TAG_UTC_TIME) {
    expect(/^\d{12}Z$/.test(text), `${what} is not a valid UTCTime`)
    date = asn1.utcTimeToDate(text)
  } else {
    expect(/^\d{14}Z$/.test(text), `${what} is not a valid GeneralizedTime`)
    date = asn1.generalizedTimeToDate(text)
  }
  expect(!Number.isNaN(date.getTime()), `${what} is not a valid date`)
  return date
}

function readAlgorithm (der: Uint8Array, tlv: Tlv | undefined): string {
  expect(tlv !== undefined && tlv.tag === TAG_SEQUENCE, 'expected an AlgorithmIdentifier')
  const parts = childrenOf(der, tlv)
  expect(parts.length >= 1 && parts.length <= 2, 'malformed AlgorithmIdentifier')
  return readOid(der, parts[0])
}

function decodeCrl (pem: string): DecodedCrl {
  let der: Buffer
  try {
    der = pemToDer(pem, [CRL_PEM_LABEL])
  } catch (err) {
    throw new Malformed(describeError(err))
  }
  const signed = splitSigned(der)
  const fields = childrenOf(der, signed.tbsTlv)
  let i = 0
  let version = 0
  if (fields[i]?.tag === TAG_INTEGER) {
    const v = readUnsigned(der, fields[i++], 'version')
    expect(v === 1n, 'unsupported CRL version')
    version = 1
  }
  const innerAlg = fields[i++]
  expect(innerAlg !== undefined, 'missing signature algorithm')
  expect(Buffer.from(tlvBytes(der, innerAlg)).equals(Buffer.from(signed.algorithm)),
    'the signature algorithms inside and outside the TBSCertList differ')
  const algorithm = readAlgorithm(der, innerAlg)
  expect(algorithm === OID_SHA256_WITH_RSA, `unsupported signature algorithm ${algorithm}`)

  const issuerTlv = fields[i++]
  expect(issuerTlv !== undefined && issuerTlv.tag === TAG_SEQUENCE, 'issuer is not a Name')
  const issuerDer = tlvBytes(der, issuerTlv)
  let issuer: string
  try {
    const rdn = asn1.fromDer(toBinary(issuerDer), true)
    const attributes = forgePkiExtra.RDNAttributesAsArray(rdn)
    issuer = commonNameOf({ attributes })
  } catch (err) {
    throw new Malformed(`malformed issuer: ${describeError(err)}`)
  }

  const thisUpdate = readTime(der, fields[i++], 'thisUpdate')
  let nextUpdate: Date | null = null
  if (isTime(fields[i])) nextUpdate = readTime(der, fields[i++], 'nextUpdate')

  const revoked = new Map<string, Date>()
  if (fields[i]?.tag === TAG_SEQUENCE) {
    for (const entry of childrenOf(der, fields[i++])) {
      expect(entry.tag === TAG_SEQUENCE, 'a revoked entry is not a SEQUENCE')
      const parts = childrenOf(der, entry)
      expect(parts.length === 2 || (parts.length === 3 && parts[2].tag === TAG_SEQUENCE), 'malformed revoked entry')
      const serial = readUnsigned(der, parts[0], 'a revoked serial number')
      const revokedAt = readTime(der, parts[1], 'a revocation date')
      const key = normalizeSerial(serial.toString(16))
      expect(key !== null, 'invalid serial')
      if (!revoked.has(key)) revoked.set(key, revokedAt)
    }
  }

  let number: bigint | null = null
  let authorityKeyIdentifier: string | null = null
  if (fields[i]?.tag === 0xa0) {
    expect(version === 1, 'extensions need a v2 CRL')
    const wrapper = childrenOf(der, fields[i++])
    expect(wrapper.length === 1 && wrapper[0].tag === TAG_SEQUENCE, 'malformed crlExtensions')
    const seen = new Set<string>()
    for (const ext of childrenOf(der, wrapper[0])) {
      expect(ext.tag === TAG_SEQUENCE, 'an extension is not a SEQUENCE')
      const parts = childrenOf(der, ext)
      expect(parts.length === 2 || parts.length === 3, 'malformed extension')
      const id = readOid(der, parts[0])
      expect(!seen.has(id), `duplicate extension ${id}`)
      seen.add(id)
      let critical = false
      if (parts.length === 3) {
        expect(parts[1].tag === 0x01 && parts[1].end - parts[1].contentStart === 1, 'malformed critical flag')
        critical = der[parts[1].contentStart] !== 0
      }
      const valueTlv = parts[parts.length - 1]
      expect(valueTlv.tag === TAG_OCTET_STRING, 'an extension value is not an OCTET STRING')
      const value = tlvContent(der, valueTlv)
      if (id === OID_CRL_NUMBER) {
        number = readUnsigned(value, readSingleTlv(value), 'cRLNumber')
      } else if (id === OID_AUTHORITY_KEY_IDENTIFIER) {
        const aki = readSingleTlv(value)
        expect(aki.tag === TAG_SEQUENCE, 'malformed authorityKeyIdentifier')
        const keyId = childrenOf(value, aki).find(t => t.tag === 0x80)
        if (keyId !== undefined) authorityKeyIdentifier = Buffer.from(tlvContent(value, keyId)).toString('hex')
      } else {
        expect(!critical, `unsupported critical CRL extension ${id}`)
      }
    }
  }
  expect(i === fields.length, 'unexpected fields in the TBSCertList')
  expect(number !== null, 'the CRL has no cRLNumber')

  return {
    parsed: { number, issuer, thisUpdate, nextUpdate, revoked, pem: derToPem(der, CRL_PEM_LABEL) },
    signed,
    issuerDer,
    authorityKeyIdentifier
  }
}

function decodeOrThrow (pem: string): DecodedCrl {
  try {
    return decodeCrl(pem)
  } catch (err) {
    throw new CaError('crl_malformed', `malformed CRL: ${describeError(err)}`, { cause: err })
  }
}

/** Parses a CRL without checking its signature. Throws CaError('crl_malformed'). */
export function parseCrl (pem: string): ParsedCrl {
  return decodeOrThrow(pem).parsed
}

/**
 * Parses a CRL and checks that the operator CA issued and signed it.
 * Throws CaError: crl_malformed, crl_untrusted (or cert_malformed for a bad caPem).
 */
export function verifyCrl (pem: string, caPem: string): ParsedCrl {
  const ca = loadTrustedCa(caPem)
  const decoded = decodeOrThrow(pem)
  if (!Buffer.from(decoded.issuerDer).equals(Buffer.from(ca.subjectDer))) {
    throw new CaError('crl_untrusted',
      `the CRL was issued by ${JSON.stringify(decoded.parsed.issuer)}, not by the operator CA ${JSON.stringify(ca.name)}`)
  }
  if (decoded.authorityKeyIdentifier !== null && ca.keyIdentifier !== null &&
    decoded.authorityKeyIdentifier !== ca.keyIdentifier) {
    throw new CaError('crl_untrusted', 'the CRL was signed by a different key of a CA with the same name')
  }
  if (!verifySigned(decoded.signed, ca.publicKey)) throw new CaError('crl_untrusted', 'the CRL signature does not verify with the operator CA key')
  return decoded.parsed
}

/** True when `candidate` supersedes `current` (a higher cRLNumber). */
export function isNewerCrl (candidate: ParsedCrl, current: ParsedCrl | null): boolean {
  return current === null || candidate.number > current.number
}
