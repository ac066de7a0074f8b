/**
 * The CA private key at rest: PKCS#8 EncryptedPrivateKeyInfo (RFC 5958) in PEM
 * (`-----BEGIN ENCRYPTED PRIVATE KEY-----`), encrypted with PBES2 (RFC 8018):
 * scrypt (RFC 7914) derives a 256-bit key from the passphrase, AES-256-CBC encrypts.
 *
 * Why not node:crypto's own `KeyObject.export({ cipher, passphrase })`: it writes PBES2 with
 * PBKDF2-HMAC-SHA256 at 2048 iterations (OpenSSL's PKCS5_DEFAULT_ITER, checked with
 * `openssl asn1parse`), cheap for anyone guessing passphrases offline against a stolen file.
 * OpenSSL refuses to decrypt scrypt parameters that need more than 32 MiB ("memory limit
 * exceeded"), so N = 2^14, r = 8 (16 MiB) is the largest memory cost `openssl pkey` and Node
 * still read; p = 5 multiplies the work by five (OWASP's Password Storage Cheat Sheet lists
 * N = 2^14, r = 8, p = 5 as equivalent to N = 2^17, p = 1). About 0.2 s per unlock here.
 *
 * Only writing is ours: decryption is OpenSSL's (createPrivateKey), so whatever loads here
 * also loads with `openssl pkey -in ca.key -passin …`.
 */
import { createCipheriv, createPrivateKey, randomBytes, scrypt as scryptCallback, type ScryptOptions } from 'node:crypto'
import { childrenOf, readSingleTlv, TAG_OCTET_STRING, TAG_SEQUENCE } from './der.ts'
import { CaError, describeError } from './errors.ts'
import { tlv } from './signed.ts'
import { derToPem, encodeOidContent } from './x509.ts'

/** scrypt work factor of new and re-encrypted CA keys (docs/operations.md states it) */
export const CA_KEY_KDF = { N: 16384, r: 8, p: 5 } as const

const OID_PBES2 = '1.2.840.113549.1.5.13'
const OID_SCRYPT = '1.3.6.1.4.1.11591.4.11'
const OID_AES_256_CBC = '2.16.840.1.101.3.4.1.42'
const KEY_LENGTH = 32
const SALT_LENGTH = 16
const ENCRYPTED_LABEL = 'ENCRYPTED PRIVATE KEY'

/** A passphrase, or a function asked for it only when the key turns out to be encrypted. */
export type Passphrase = string | (() => string | Promise<string>)

async function scrypt (passphrase: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    scryptCallback(passphrase, salt, KEY_LENGTH, options, (err, key) => { if (err != null) reject(err); else resolve(key) })
  })
}

function derInteger (value: number): Buffer {
  let hex = value.toString(16)
  if (hex.length % 2 === 1) hex = '0' + hex
  let bytes = Buffer.from(hex, 'hex')
  if ((bytes[0] & 0x80) !== 0) bytes = Buffer.concat([Buffer.from([0]), bytes])
  return tlv(0x02, bytes)
}

const oid = (dotted: string): Buffer => tlv(0x06, encodeOidContent(dotted))
const sequence = (...parts: Buffer[]): Buffer => tlv(TAG_SEQUENCE, Buffer.concat(parts))
const octets = (bytes: Buffer): Buffer => tlv(TAG_OCTET_STRING, bytes)

/** True for a PEM private key that needs a passphrase (PKCS#8 encrypted, or legacy `Proc-Type: 4,ENCRYPTED`). */
export function isEncryptedKeyPem (pem: string): boolean {
  return pem.includes(`-----BEGIN ${ENCRYPTED_LABEL}-----`) || /^Proc-Type:\s*4,ENCRYPTED/m.test(pem)
}

/** Encrypts a private key (any PEM node:crypto reads) under `passphrase`; returns the encrypted PKCS#8 PEM. */
export async function encryptPrivateKeyPem (keyPem: string, passphrase: string): Promise<string> {
  if (typeof passphrase !== 'string' || passphrase.length === 0) throw new RangeError('the CA key passphrase must not be empty')
  const plain = createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' })
  const salt = randomBytes(SALT_LENGTH)
  const iv = randomBytes(16)
  const { N, r, p } = CA_KEY_KDF
  const key = await scrypt(passphrase, salt, { N, r, p, maxmem: 64 * 1024 * 1024 })
  const cipher = createCipheriv('aes-256-cbc', key, iv)
  const encrypted = Buffer.concat([cipher.update(plain), cipher.final()])
  const algorithm = sequence(
    oid(OID_PBES2),
    sequence(
      sequence(oid(OID_SCRYPT), sequence(octets(salt), derInteger(N), derInteger(r), derInteger(p), derInteger(KEY_LENGTH))),
      sequence(oid(OID_AES_256_CBC), octets(iv))
    )
  )
  return derToPem(sequence(algorithm, octets(encrypted)), ENCRYPTED_LABEL)
}

function checkEncryptedStructure (pem: string, path: string): void {
  // a damaged file should not be reported as a wrong passphrase: check the outer structure first
  try {
    const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '')
    const der = Buffer.from(b64, 'base64')
    const outer = readSingleTlv(der)
    const parts = childrenOf(der, outer)
    if (outer.tag !== TAG_SEQUENCE || parts.length !== 2 || parts[0].tag !== TAG_SEQUENCE || parts[1].tag !== TAG_OCTET_STRING) {
      throw new Error('not a PKCS#8 EncryptedPrivateKeyInfo')
    }
  } catch (err) {
    throw new CaError('ca_missing', `the CA key ${path} is unreadable: ${describeError(err)}`)
  }
}

/**
 * Returns the unencrypted PKCS#8 PEM of `pem` (in memory only). A plain key is returned as it
 * is, without asking for the passphrase. Throws CaError 'ca_passphrase_required' when the key is
 * encrypted and no passphrase is given, 'ca_passphrase_wrong' when it does not decrypt.
 */
export async function unlockPrivateKeyPem (pem: string, passphrase: Passphrase | undefined, path: string): Promise<{ keyPem: string, encrypted: boolean }> {
  if (!isEncryptedKeyPem(pem)) return { keyPem: pem, encrypted: false }
  if (pem.includes(`-----BEGIN ${ENCRYPTED_LABEL}-----`)) checkEncryptedStructure(pem, path)
  if (passphrase === undefined) {
    throw new CaError('ca_passphrase_required', `the CA key ${path} is encrypted and no passphrase was given`)
  }
  const secret = typeof passphrase === 'function' ? await passphrase() : passphrase
  try {
    const key = createPrivateKey({ key: pem, format: 'pem', passphrase: secret })
    return { keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string, encrypted: true }
  } catch (err) {
    throw new CaError('ca_passphrase_wrong', `wrong passphrase for the CA key ${path}`, { cause: err })
  }
}
