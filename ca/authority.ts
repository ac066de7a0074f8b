/**
 * The operator CA as a directory:
 *   ca.crt       the CA certificate (PEM), the mesh's trust anchor
 *   ca.key       the CA private key, mode 0600: encrypted PKCS#8 PEM under the operator's
 *                passphrase (key-file.ts), or plain PKCS#8 for throw-away CAs (tests, devnet)
 *   index.json   every certificate issued: serial, PeerId, name, roles, namespaces, validity, revocation
 *   crlnumber    the number of the last CRL issued (decimal)
 * Every file is replaced atomically (temp file + rename), and changes to
 * index.json / crlnumber run under a lock file so concurrent commands do not
 * lose each other's updates.
 */
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { exists, writeFileAtomic } from '../lib/fs.ts'
import { parseNodeCertificate, verifyNodeCertificate, type NodeCertificate } from './certificate.ts'
import { createCrl } from './crl.ts'
import { verifyNodeCsr } from './csr.ts'
import { CaError, describeError } from './errors.ts'
import { encryptPrivateKeyPem, isEncryptedKeyPem, unlockPrivateKeyPem, type Passphrase } from './key-file.ts'
import { OID_NAMESPACES, OID_ROLES, PEER_URI_PREFIX } from './oids.ts'
import { parseNamespaces, parseRoles, type Role } from './roles.ts'
import { ipAddressBytes, LOOPBACK_SUBJECT_ALT_NAMES, parseSubjectAltNames, type SubjectAltName } from './san.ts'
import { signForgeCertificate } from './signed.ts'
import {
  forge, forgeOid, generateRsaKey, nameAttributes, normalizeSerial, randomSerialHex, reencodableAttributes,
  toBinary, utf8ListExtensionValue
} from './x509.ts'

export const CA_CERT_FILE = 'ca.crt'
export const CA_KEY_FILE = 'ca.key'
export const CA_INDEX_FILE = 'index.json'
export const CA_CRLNUMBER_FILE = 'crlnumber'
const LOCK_FILE = '.lock'

const DAY_MS = 24 * 60 * 60 * 1000
/** certificates start a little in the past so peers with slightly slow clocks accept them */
const BACKDATE_MS = 5 * 60 * 1000
const MAX_OPERATOR_NAME_LENGTH = 61 // the CA CN is `${name} CA`, at most 64 characters

export interface IndexEntry {
  serial: string
  peerId: string
  name: string
  roles: Role[]
  namespaces: string[]
  notBefore: string
  notAfter: string
  fingerprint: string
  issuedAt: string
  revokedAt: string | null
}

interface IndexFile {
  version: 1
  certificates: IndexEntry[]
}

export interface InitCaOptions {
  /** operator name: CA subject `CN=<name> CA, O=<name>` (default 'BKG Operator') */
  name?: string
  /** validity in days (default 3650) */
  days?: number
  /**
   * replace an existing CA: its files move to DIR/replaced-<time>/ (the old key is never
   * destroyed by a mistyped command), the index and CRL number start afresh
   */
  force?: boolean
  /**
   * encrypts ca.key under this passphrase. Omitted, the key is written unencrypted: meant for
   * tests and the devnet's throw-away CA; the CLI omits it only with --insecure-no-passphrase.
   */
  passphrase?: string
  now?: Date
}

/** How commands that use the CA key get its passphrase; a plain (unencrypted) key needs none. */
export interface CaKeyOptions {
  passphrase?: Passphrase
}

export interface LoadedCa {
  certPem: string
  /** the unencrypted PKCS#8 PEM, in memory only */
  keyPem: string
  /** whether ca.key on disk is encrypted */
  keyEncrypted: boolean
  cert: forge.pki.Certificate
  key: forge.pki.rsa.PrivateKey
}

export interface SignNodeCsrOptions {
  /** default ['member'] */
  roles?: readonly string[] | string
  /** default [] */
  namespaces?: readonly string[] | string
  /** validity in days (default 365), capped at the CA's own expiry */
  days?: number
  /** DNS names and IP addresses the node's HTTPS API is reached by: `DNS:name`, `IP:address` (san.ts) */
  sans?: readonly string[] | string
  /** also name localhost, 127.0.0.1 and ::1 (default true; see LOOPBACK_SUBJECT_ALT_NAMES) */
  loopbackSans?: boolean
  now?: Date
  passphrase?: Passphrase
}

export type RevokeTarget = { serial: string } | { certPem: string }

// ---------------------------------------------------------------- files

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** Runs `fn` holding DIR/.lock (created exclusively; a lock older than a minute is considered stale). */
async function withLock<T> (dir: string, fn: () => Promise<T>): Promise<T> {
  const lockPath = join(dir, LOCK_FILE)
  const deadline = Date.now() + 15_000
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx', 0o600)
      await handle.writeFile(`${process.pid}\n`)
      await handle.close()
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      // gone meanwhile (its holder finished): the next attempt takes it
      const info = await stat(lockPath).catch(() => null)
      if (info !== null && Date.now() - info.mtimeMs > 60_000) {
        await unlink(lockPath).catch(() => {}) // another process took the stale lock over first: the next attempt waits for it
        continue
      }
      if (Date.now() > deadline) throw new Error(`the CA directory ${dir} is locked by another process (${lockPath})`)
      await sleep(25 + Math.random() * 50)
    }
  }
  try {
    return await fn()
  } finally {
    await unlink(lockPath).catch(() => {}) // fn's result stands; a lock left behind is taken over as stale after a minute
  }
}

async function readIndex (dir: string): Promise<IndexFile> {
  const path = join(dir, CA_INDEX_FILE)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, certificates: [] }
    throw err
  }
  try {
    const data = JSON.parse(text) as IndexFile
    if (!Array.isArray(data.certificates)) throw new Error('no certificates array')
    return data
  } catch (err) {
    throw new Error(`the CA index ${path} is corrupt: ${describeError(err)}`)
  }
}

async function writeIndex (dir: string, index: IndexFile): Promise<void> {
  await writeFileAtomic(join(dir, CA_INDEX_FILE), JSON.stringify(index, null, 2) + '\n', 0o600)
}

function positiveDays (days: number, what: string): number {
  if (typeof days !== 'number' || !Number.isFinite(days) || days <= 0) {
    throw new RangeError(`${what} must be a positive number of days, got ${String(days)}`)
  }
  return days
}

// ---------------------------------------------------------------- CA

/**
 * Creates a new CA in `dir`. Refuses (CaError 'ca_exists') when one is there, unless `force`;
 * `replaced` is where the previous CA's files were moved then.
 */
export async function initCa (dir: string, options: InitCaOptions = {}): Promise<{ certPem: string, dir: string, replaced: string | null }> {
  const name = options.name ?? 'BKG Operator'
  if (typeof name !== 'string' || name.trim() === '' || name.length > MAX_OPERATOR_NAME_LENGTH ||
    /\p{Cc}/u.test(name)) {
    throw new RangeError(`invalid operator name ${JSON.stringify(name)}: expected 1-${MAX_OPERATOR_NAME_LENGTH} printable characters`)
  }
  const days = positiveDays(options.days ?? 3650, 'days')
  if (options.passphrase !== undefined && (typeof options.passphrase !== 'string' || options.passphrase === '')) {
    throw new RangeError('the CA key passphrase must not be empty')
  }
  await mkdir(dir, { recursive: true, mode: 0o700 })

  return await withLock(dir, async () => {
    const keyPath = join(dir, CA_KEY_FILE)
    const certPath = join(dir, CA_CERT_FILE)
    const present = await caExists(dir)
    if (present && options.force !== true) {
      throw new CaError('ca_exists', `a CA already exists in ${dir}: refusing to overwrite ${CA_KEY_FILE} ` +
        '(`bkg ca init --force` replaces it and moves the old files aside; nodes then trust only the new ca.crt)')
    }

    const now = options.now ?? new Date()
    const rsa = generateRsaKey()
    const cert = forge.pki.createCertificate()
    cert.publicKey = rsa.publicKey
    cert.serialNumber = randomSerialHex()
    cert.validity.notBefore = new Date(now.getTime() - BACKDATE_MS)
    cert.validity.notAfter = new Date(now.getTime() + days * DAY_MS)
    cert.setSubject(nameAttributes(`${name} CA`, name))
    cert.setIssuer(nameAttributes(`${name} CA`, name))
    cert.setExtensions([
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: true }
    ])
    const certPem = signForgeCertificate(cert, rsa.privateKeyPem)
    const keyFile = options.passphrase === undefined ? rsa.privateKeyPem : await encryptPrivateKeyPem(rsa.privateKeyPem, options.passphrase)

    const replaced = present ? await moveCaAside(dir, now) : null
    await writeFileAtomic(keyPath, keyFile, 0o600)
    await writeFileAtomic(certPath, certPem, 0o644)
    await writeIndex(dir, { version: 1, certificates: [] })
    // usually absent (moved aside with the old CA); a number left behind only makes the new CA's CRL numbers start higher
    await unlink(join(dir, CA_CRLNUMBER_FILE)).catch(() => {})
    return { certPem, dir, replaced }
  })
}

/** Moves the CA files of `dir` into a new DIR/replaced-<time>/ (mode 0700) and returns its path. */
async function moveCaAside (dir: string, now: Date): Promise<string> {
  const aside = join(dir, `replaced-${now.toISOString().replace(/[:.]/g, '-')}`)
  await mkdir(aside, { mode: 0o700 })
  for (const file of [CA_KEY_FILE, CA_CERT_FILE, CA_INDEX_FILE, CA_CRLNUMBER_FILE]) {
    await rename(join(dir, file), join(aside, file)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
  }
  return aside
}

/** Whether `dir` holds a CA (or part of one: ca.key or ca.crt) that initCa would refuse to replace. */
export async function caExists (dir: string): Promise<boolean> {
  return (await exists(join(dir, CA_KEY_FILE))) || (await exists(join(dir, CA_CERT_FILE)))
}

/** Whether DIR/ca.key is encrypted (null when there is none), so the CLI can warn about a plain one. */
export async function isCaKeyEncrypted (dir: string): Promise<boolean | null> {
  try {
    return isEncryptedKeyPem(await readFile(join(dir, CA_KEY_FILE), 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}

/**
 * Re-encrypts DIR/ca.key under `newPassphrase` (`passphrase` unlocks the current key; a plain
 * key needs none, which is how an unencrypted CA gets encrypted).
 */
export async function changeCaPassphrase (dir: string, options: CaKeyOptions & { newPassphrase: string }): Promise<void> {
  if (typeof options.newPassphrase !== 'string' || options.newPassphrase === '') {
    throw new RangeError('the CA key passphrase must not be empty')
  }
  const ca = await loadCa(dir, options)
  const keyFile = await encryptPrivateKeyPem(ca.keyPem, options.newPassphrase)
  await withLock(dir, async () => {
    // another command may have replaced the CA meanwhile: write only over the key just unlocked
    const current = await readFile(join(dir, CA_KEY_FILE), 'utf8')
    const again = await unlockPrivateKeyPem(current, options.passphrase, join(dir, CA_KEY_FILE))
    if (again.keyPem !== ca.keyPem) throw new CaError('ca_exists', `the CA key in ${dir} changed while its passphrase was being changed; try again`)
    await writeFileAtomic(join(dir, CA_KEY_FILE), keyFile, 0o600)
  })
}

/**
 * Loads the CA of `dir`, decrypting its key with `options.passphrase`. Throws CaError
 * 'ca_missing' when there is none, 'ca_passphrase_required'/'ca_passphrase_wrong' (key-file.ts).
 */
export async function loadCa (dir: string, options: CaKeyOptions = {}): Promise<LoadedCa> {
  let certPem: string
  let keyPem: string
  try {
    certPem = await readFile(join(dir, CA_CERT_FILE), 'utf8')
    keyPem = await readFile(join(dir, CA_KEY_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CaError('ca_missing',
        `no CA in ${dir}: ${CA_CERT_FILE} and ${CA_KEY_FILE} are needed (create them with \`bkg ca init --out ${dir}\`)`)
    }
    throw err
  }
  const unlocked = await unlockPrivateKeyPem(keyPem, options.passphrase, join(dir, CA_KEY_FILE))
  keyPem = unlocked.keyPem
  let cert: forge.pki.Certificate
  let key: forge.pki.rsa.PrivateKey
  try {
    cert = forge.pki.certificateFromPem(certPem)
    key = forge.pki.privateKeyFromPem(keyPem)
  } catch (err) {
    throw new CaError('ca_missing', `the CA in ${dir} is unreadable: ${describeError(err)}`)
  }
  const publicKey = cert.publicKey as forge.pki.rsa.PublicKey
  if (publicKey.n.compareTo(key.n) !== 0) {
    throw new CaError('ca_missing', `the CA in ${dir} is inconsistent: ${CA_KEY_FILE} does not belong to ${CA_CERT_FILE}`)
  }
  return { certPem, keyPem, keyEncrypted: unlocked.encrypted, cert, key }
}

/** Checks that `dir` holds a CA, for commands that need its records but not its key. */
async function requireCa (dir: string): Promise<void> {
  if (!(await exists(join(dir, CA_CERT_FILE))) || !(await exists(join(dir, CA_KEY_FILE)))) {
    throw new CaError('ca_missing',
      `no CA in ${dir}: ${CA_CERT_FILE} and ${CA_KEY_FILE} are needed (create them with \`bkg ca init --out ${dir}\`)`)
  }
}

function caKeyIdentifier (ca: LoadedCa): string {
  const ski = (ca.cert.extensions as Array<{ name?: string, subjectKeyIdentifier?: string }>)
    .find(e => e.name === 'subjectKeyIdentifier')
  if (typeof ski?.subjectKeyIdentifier === 'string') return forge.util.hexToBytes(ski.subjectKeyIdentifier)
  return ca.cert.generateSubjectKeyIdentifier().getBytes()
}

/** The operator's names plus (unless turned off) the loopback names, loopback first, de-duplicated. */
function subjectAltNamesFor (options: SignNodeCsrOptions): SubjectAltName[] {
  const given = parseSubjectAltNames(options.sans ?? [])
  const all = [...(options.loopbackSans === false ? [] : LOOPBACK_SUBJECT_ALT_NAMES), ...given]
  return all.filter((san, i) => all.findIndex((other) => other.type === san.type && other.value === san.value) === i)
}

/** A SAN as forge encodes it: dNSName (2), or iPAddress (7) from bytes made here (forge's IPv6 parser is lax). */
function forgeAltName (san: SubjectAltName): { type: number, value: string } {
  return san.type === 'DNS' ? { type: 2, value: san.value } : { type: 7, value: toBinary(ipAddressBytes(san.value)) }
}

/**
 * Verifies a node CSR and issues its certificate, recorded in index.json.
 * Throws the CaErrors of verifyNodeCsr, invalid_role, invalid_namespace, ca_missing.
 */
export async function signNodeCsr (dir: string, csrPem: string, options: SignNodeCsrOptions = {}):
Promise<{ certPem: string, cert: NodeCertificate }> {
  const roles = parseRoles(options.roles ?? ['member'])
  const namespaces = parseNamespaces(options.namespaces ?? [])
  const days = positiveDays(options.days ?? 365, 'days')
  const sans = subjectAltNamesFor(options)
  const ca = await loadCa(dir, options)
  const request = await verifyNodeCsr(csrPem)
  const now = options.now ?? new Date()

  return await withLock(dir, async () => {
    const index = await readIndex(dir)
    const used = new Set(index.certificates.map(e => e.serial))
    let serial = randomSerialHex()
    while (used.has(serial)) serial = randomSerialHex()

    const notAfter = Math.min(now.getTime() + days * DAY_MS, ca.cert.validity.notAfter.getTime())
    const cert = forge.pki.createCertificate()
    cert.publicKey = forge.pki.publicKeyFromPem(request.publicKeyPem)
    cert.serialNumber = serial
    cert.validity.notBefore = new Date(now.getTime() - BACKDATE_MS)
    cert.validity.notAfter = new Date(notAfter)
    cert.setSubject(nameAttributes(request.name))
    cert.setIssuer(reencodableAttributes(ca.cert.subject.attributes))
    cert.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 6, value: PEER_URI_PREFIX + request.peerId }, ...sans.map(forgeAltName)] },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: caKeyIdentifier(ca) },
      { id: forgeOid(OID_ROLES), critical: false, value: utf8ListExtensionValue(roles) },
      { id: forgeOid(OID_NAMESPACES), critical: false, value: utf8ListExtensionValue(namespaces) }
    ])
    const certPem = signForgeCertificate(cert, ca.keyPem)
    // self-check: what we hand out must pass the same verification peers run
    const parsed = verifyNodeCertificate(certPem, { caPem: ca.certPem, now })

    index.certificates.push({
      serial: parsed.serial,
      peerId: parsed.peerId,
      name: parsed.name,
      roles: parsed.roles,
      namespaces: parsed.namespaces,
      notBefore: parsed.notBefore.toISOString(),
      notAfter: parsed.notAfter.toISOString(),
      fingerprint: parsed.fingerprint,
      issuedAt: now.toISOString(),
      revokedAt: null
    })
    await writeIndex(dir, index)
    return { certPem, cert: parsed }
  })
}

/** Issued certificates recorded in the CA index. */
export async function listCertificates (dir: string): Promise<IndexEntry[]> {
  await requireCa(dir)
  return (await readIndex(dir)).certificates
}

/**
 * Marks a certificate issued by this CA as revoked (idempotent: the first
 * revocation date is kept). Throws CaError('serial_unknown') for certificates
 * this CA did not issue. Publish the change with issueCrl. Needs the CA key unlocked, like every
 * act of the CA: whoever cannot unlock it cannot edit its records through this library either.
 */
export async function revokeCertificate (dir: string, target: RevokeTarget, options: CaKeyOptions & { now?: Date } = {}): Promise<IndexEntry> {
  await loadCa(dir, options)
  let serial: string | null
  let fingerprint: string | null = null
  if ('certPem' in target) {
    const cert = parseNodeCertificate(target.certPem)
    serial = cert.serial
    fingerprint = cert.fingerprint
  } else {
    serial = normalizeSerial(target.serial)
    if (serial === null) throw new CaError('serial_unknown', `invalid serial number ${JSON.stringify(target.serial)}: expected hex`)
  }
  const wanted = serial
  return await withLock(dir, async () => {
    const index = await readIndex(dir)
    const entry = index.certificates.find(e => e.serial === wanted)
    if (entry === undefined || (fingerprint !== null && entry.fingerprint !== fingerprint)) {
      throw new CaError('serial_unknown', `no certificate with serial ${wanted} was issued by the CA in ${dir}`)
    }
    if (entry.revokedAt === null) {
      entry.revokedAt = (options.now ?? new Date()).toISOString()
      await writeIndex(dir, index)
    }
    return entry
  })
}

/** Issues the next CRL (cRLNumber + 1) listing every revoked certificate. */
export async function issueCrl (dir: string, options: CaKeyOptions & { days?: number, now?: Date } = {}):
Promise<{ crlPem: string, number: bigint }> {
  const days = positiveDays(options.days ?? 7, 'days')
  const ca = await loadCa(dir, options)
  return await withLock(dir, async () => {
    const numberPath = join(dir, CA_CRLNUMBER_FILE)
    let last = 0n
    try {
      const text = (await readFile(numberPath, 'utf8')).trim()
      if (!/^\d+$/.test(text)) throw new Error(`the CRL number file ${numberPath} is corrupt`)
      last = BigInt(text)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    const number = last + 1n
    const index = await readIndex(dir)
    const revoked = index.certificates
      .filter(e => e.revokedAt !== null)
      .map(e => ({ serial: e.serial, revokedAt: new Date(e.revokedAt as string) }))
    const thisUpdate = options.now ?? new Date()
    const crlPem = createCrl({
      caCertPem: ca.certPem,
      caKeyPem: ca.keyPem,
      number,
      revoked,
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + days * DAY_MS)
    })
    await writeFileAtomic(numberPath, `${number}\n`, 0o600)
    return { crlPem, number }
  })
}
