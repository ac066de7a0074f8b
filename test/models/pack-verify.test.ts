import { createHash, createPrivateKey, randomBytes, sign } from 'node:crypto'
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MemoryBlockstore } from 'blockstore-core/memory'
import fc from 'fast-check'
import { importBytes } from 'ipfs-unixfs-importer'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pathExists } from '../helpers/cli.ts'
import { issueCrl, revokeCertificate, verifyCrl } from '../../ca/index.ts'
import { digestContent, openPackage, packModel, signManifest, verifyEnvelope, verifyPackageContent, type PackInit } from '../../node/model-packages/index.ts'
import {
  encodeEnvelope, HEADER_BYTES, PackageError, SIGNATURE_ALGORITHM, signedBytes, totalSize,
  type Envelope, type Manifest
} from '../../protocols/model-package.ts'
import { tempDir } from '../helpers/mesh.ts'
import { expectPackageError, makeCa, makeIdentity, referenceImporterOptions, type Identity } from './helpers.ts'

const MiB = 1024 * 1024

async function cidOf (bytes: Uint8Array, chunkSize: number): Promise<string> {
  const { cid } = await importBytes(bytes, new MemoryBlockstore(), referenceImporterOptions(chunkSize))
  return cid.toString()
}

function sha256 (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/** Rewrites the envelope of a package file, keeping its content region. */
async function rewriteEnvelope (from: string, to: string, edit: (envelope: Envelope) => Envelope): Promise<void> {
  const opened = await openPackage(from)
  const bytes = await readFile(from)
  await writeFile(to, Buffer.concat([encodeEnvelope(edit(structuredClone(opened.envelope))), bytes.subarray(opened.dataOffset)]))
}

describe('packModel → openPackage → verifyEnvelope → verifyPackageContent', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let dir: string
  let caDir: string
  let caPem: string
  let publisher: Identity
  let member: Identity
  let revokee: Identity
  let foreign: Identity
  let modelDir: string
  let good: string
  let goodEnvelope: Envelope
  const sources: Record<string, Buffer> = {}

  const packInit = (over: Partial<PackInit> = {}): PackInit => ({
    source: modelDir,
    name: 'tiny',
    version: '1.1.0',
    architecture: 'llama',
    licence: 'MIT',
    chunkSize: MiB,
    publisher: { certPem: publisher.certPem, keyPem: publisher.keyPem },
    publisherCert: publisher.cert,
    out: join(dir, 'out.bkg'),
    ...over
  })
  const as = (who: Identity): Pick<PackInit, 'publisher' | 'publisherCert'> => ({
    publisher: { certPem: who.certPem, keyPem: who.keyPem }, publisherCert: who.cert
  })

  beforeAll(async () => {
    tmp = await tempDir('bkg-models-test-')
    dir = tmp.dir
    const ca = await makeCa(dir, 'Model Operator')
    caDir = ca.caDir
    caPem = ca.caPem
    const other = await makeCa(dir, 'Other Operator')
    ;[publisher, member, revokee, foreign] = await Promise.all([
      makeIdentity(caDir, dir, 'pub', ['publisher', 'member']),
      makeIdentity(caDir, dir, 'member', ['member']),
      makeIdentity(caDir, dir, 'revokee', ['publisher']),
      makeIdentity(other.caDir, dir, 'foreign', ['publisher'])
    ])

    modelDir = join(dir, 'model')
    await mkdir(join(modelDir, 'sub'), { recursive: true })
    sources['weights.bin'] = randomBytes(3 * MiB + 12345)
    sources['empty.txt'] = Buffer.alloc(0)
    sources['sub/config.json'] = Buffer.from(JSON.stringify({ layers: 2, hidden: 64 }))
    for (const [path, bytes] of Object.entries(sources)) await writeFile(join(modelDir, path), bytes)

    good = join(dir, 'good.bkg')
    goodEnvelope = await packModel(packInit({ out: good }))
  })

  afterAll(async () => {
    await tmp?.remove()
  })

  describe('round trip', () => {
    it('verifies the package it wrote', async () => {
      const opened = await openPackage(good)
      expect(opened.envelope).toEqual(goodEnvelope)
      const { manifest, publisher: cert } = verifyEnvelope(opened.envelope, { caPem })
      expect(cert.peerId).toBe(publisher.cert.peerId)
      expect(manifest).toMatchObject({
        format: 'bkg-manifest/1',
        name: 'tiny',
        version: '1.1.0',
        architecture: 'llama',
        licence: 'MIT',
        chunkSize: MiB,
        publisher: { peerId: publisher.cert.peerId, name: 'pub', serial: publisher.cert.serial }
      })
      expect(opened.envelope.signature.alg).toBe(SIGNATURE_ALGORITHM)
      expect(opened.envelope.publisher).toBe(publisher.certPem)
      let progress = 0
      await verifyPackageContent(good, opened, (bytes) => { progress += bytes })
      expect(progress).toBe(totalSize(manifest))
    })

    it('lists every file (recursively, with POSIX paths) with its real size, sha256 and UnixFS CID', async () => {
      const { manifest } = goodEnvelope
      expect(manifest.files.map((f) => f.path).sort()).toEqual(Object.keys(sources).sort())
      for (const file of manifest.files) {
        const bytes = sources[file.path]
        expect(file.size, file.path).toBe(bytes.byteLength)
        expect(file.sha256, file.path).toBe(sha256(bytes))
        expect(file.cid, file.path).toBe(await cidOf(bytes, MiB))
        expect(CID.parse(file.cid).version).toBe(1)
      }
      // the file larger than a chunk is a dag-pb root over raw leaves; a small one is a raw block of its sha256
      const weights = manifest.files.find((f) => f.path === 'weights.bin')!
      expect(CID.parse(weights.cid).code).toBe(0x70)
      const config = manifest.files.find((f) => f.path === 'sub/config.json')!
      const configCid = CID.parse(config.cid)
      expect(configCid.code).toBe(0x55)
      expect(Buffer.from(configCid.multihash.digest).toString('hex')).toBe(config.sha256)
    })

    it('gives the empty file the CID of an empty raw block, like any UnixFS importer', async () => {
      const empty = goodEnvelope.manifest.files.find((f) => f.path === 'empty.txt')!
      expect(empty.size).toBe(0)
      expect(empty.sha256).toBe(sha256(new Uint8Array(0)))
      expect(empty.cid).toBe(await cidOf(new Uint8Array(0), MiB))
    })

    it('a different chunk size gives a different CID for a multi-chunk file but the same sha256', async () => {
      const bytes = sources['weights.bin']
      async function * once (): AsyncGenerator<Uint8Array> { yield bytes }
      const small = await digestContent(once(), 256 * 1024)
      expect(small.sha256).toBe(sha256(bytes))
      expect(small.cid).toBe(await cidOf(bytes, 256 * 1024))
      expect(small.cid).not.toBe(goodEnvelope.manifest.files.find((f) => f.path === 'weights.bin')!.cid)
    })

    it('writes header + envelope + the files back to back, in manifest order', async () => {
      const bytes = await readFile(good)
      const envelopeBytes = encodeEnvelope(goodEnvelope)
      expect(bytes.byteLength).toBe(envelopeBytes.byteLength + totalSize(goodEnvelope.manifest))
      expect(bytes.subarray(0, envelopeBytes.byteLength).equals(Buffer.from(envelopeBytes))).toBe(true)
      const opened = await openPackage(good)
      expect(opened.dataOffset).toBe(envelopeBytes.byteLength)
      expect(opened.dataOffset).toBe(HEADER_BYTES + bytes.readUInt32BE(8))
      let offset = opened.dataOffset
      for (const file of goodEnvelope.manifest.files) {
        expect(bytes.subarray(offset, offset + file.size).equals(sources[file.path]), file.path).toBe(true)
        offset += file.size
      }
      expect(offset).toBe(bytes.byteLength)
    })

    it('packs a single file under its base name', async () => {
      const out = join(dir, 'single.bkg')
      const envelope = await packModel(packInit({ source: join(modelDir, 'sub', 'config.json'), out }))
      expect(envelope.manifest.files.map((f) => f.path)).toEqual(['config.json'])
      const opened = await openPackage(out)
      verifyEnvelope(opened.envelope, { caPem })
      await verifyPackageContent(out, opened)
    })
  })

  describe('refusals', () => {
    it('bad signature: a flipped signature byte → signature_invalid', async () => {
      const sig = Buffer.from(goodEnvelope.signature.value, 'base64')
      sig[sig.length >> 1] ^= 0x01
      const tampered = { ...goodEnvelope, signature: { ...goodEnvelope.signature, value: sig.toString('base64') } }
      await expectPackageError(() => verifyEnvelope(tampered, { caPem }), 'signature_invalid')
      // a signature of the wrong length, too
      const short = { ...goodEnvelope, signature: { ...goodEnvelope.signature, value: sig.subarray(1).toString('base64') } }
      await expectPackageError(() => verifyEnvelope(short, { caPem }), 'signature_invalid')
    })

    it('bad signature: the manifest changed after signing (in memory and in the file) → signature_invalid', async () => {
      const changed = { ...goodEnvelope, manifest: { ...goodEnvelope.manifest, version: '9.9.9' } }
      await expectPackageError(() => verifyEnvelope(changed, { caPem }), 'signature_invalid')

      // a hex digit of a sha256 swapped in the file: still a well-formed envelope, no longer the signed one
      const out = join(dir, 'sha-swapped.bkg')
      await rewriteEnvelope(good, out, (envelope) => {
        const file = envelope.manifest.files[0]
        file.sha256 = (file.sha256[0] === 'a' ? 'b' : 'a') + file.sha256.slice(1)
        return envelope
      })
      const opened = await openPackage(out)
      await expectPackageError(() => verifyEnvelope(opened.envelope, { caPem }), 'signature_invalid')
      // the content check on its own would catch it as well
      await expectPackageError(() => verifyPackageContent(out, opened), 'content_mismatch')
    })

    it('bad signature: signed over the manifest without the domain-separation context → signature_invalid', async () => {
      const bare = new TextEncoder().encode(new TextDecoder().decode(signedBytes(goodEnvelope.manifest)).replace(/^[^\n]*\n/, ''))
      const value = sign('sha256', bare, createPrivateKey(publisher.keyPem)).toString('base64')
      const envelope: Envelope = { ...goodEnvelope, signature: { alg: SIGNATURE_ALGORITHM, value } }
      await expectPackageError(() => verifyEnvelope(envelope, { caPem }), 'signature_invalid')
    })

    it('unknown publisher: a certificate of another CA → publisher_unknown', async () => {
      const out = join(dir, 'foreign.bkg')
      await packModel(packInit({ ...as(foreign), out }))
      const opened = await openPackage(out)
      await expectPackageError(() => verifyEnvelope(opened.envelope, { caPem }), 'publisher_unknown', /not issued by the operator CA/)
      // it is a good package for its own operator
      expect(verifyEnvelope(opened.envelope, { caPem: foreign.caPem }).manifest.name).toBe('tiny')
      // and a publisher certificate that is no certificate at all
      await expectPackageError(() => verifyEnvelope({ ...goodEnvelope, publisher: 'garbage' }, { caPem }), 'publisher_unknown')
    })

    it('revoked publisher: listed on a verified CRL → publisher_revoked; others still pass', async () => {
      const out = join(dir, 'revokee.bkg')
      await packModel(packInit({ ...as(revokee), out }))
      const opened = await openPackage(out)
      expect(verifyEnvelope(opened.envelope, { caPem }).publisher.serial).toBe(revokee.cert.serial)
      await revokeCertificate(caDir, { certPem: revokee.certPem })
      const { crlPem } = await issueCrl(caDir)
      const crl = verifyCrl(crlPem, caPem)
      await expectPackageError(() => verifyEnvelope(opened.envelope, { caPem, crl }), 'publisher_revoked', new RegExp(revokee.cert.serial))
      expect(verifyEnvelope(goodEnvelope, { caPem, crl }).manifest.version).toBe('1.1.0')
    })

    it('expired or not yet valid publisher → publisher_expired / publisher_not_yet_valid', async () => {
      const { notBefore, notAfter } = publisher.cert
      await expectPackageError(() => verifyEnvelope(goodEnvelope, { caPem, now: new Date(notAfter.getTime() + 1000) }), 'publisher_expired')
      await expectPackageError(() => verifyEnvelope(goodEnvelope, { caPem, now: new Date(notBefore.getTime() - 1000) }), 'publisher_not_yet_valid')
      expect(verifyEnvelope(goodEnvelope, { caPem, now: new Date(notAfter.getTime() - 1000) }).manifest.name).toBe('tiny')
    })

    it('packing refuses what publishing would: expired, not yet valid, revoked (with the CRL), foreign; nothing written', async () => {
      const out = join(dir, 'refused.bkg')
      const { notBefore, notAfter } = publisher.cert
      await expectPackageError(() => packModel(packInit({ out, now: new Date(notAfter.getTime() + 1000) })), 'publisher_expired')
      await expectPackageError(() => packModel(packInit({ out, caPem, now: new Date(notAfter.getTime() + 1000) })), 'publisher_expired')
      await expectPackageError(() => packModel(packInit({ out, now: new Date(notBefore.getTime() - 1000) })), 'publisher_not_yet_valid')
      await revokeCertificate(caDir, { certPem: revokee.certPem })
      const crl = verifyCrl((await issueCrl(caDir)).crlPem, caPem)
      await expectPackageError(() => packModel(packInit({ ...as(revokee), out, caPem, crl })), 'publisher_revoked', new RegExp(revokee.cert.serial))
      await expectPackageError(() => packModel(packInit({ ...as(foreign), out, caPem })), 'publisher_unknown')
      expect(await pathExists(out)).toBe(false)
      // the same CA and CRL let a current, unrevoked publisher through
      expect((await packModel(packInit({ out, caPem, crl }))).manifest.name).toBe('tiny')
    })

    it('publisher without the publisher role: packing is refused and nothing is written', async () => {
      const out = join(dir, 'member.bkg')
      await expectPackageError(() => packModel(packInit({ ...as(member), out })), 'publisher_not_publisher', /publisher role/)
      expect(await pathExists(out)).toBe(false)
    })

    it('publisher without the publisher role: an envelope hand-signed with the member key → publisher_not_publisher', async () => {
      const manifest: Manifest = {
        ...goodEnvelope.manifest,
        publisher: { peerId: member.cert.peerId, name: member.cert.name, serial: member.cert.serial }
      }
      const value = sign('sha256', signedBytes(manifest), createPrivateKey(member.keyPem)).toString('base64')
      const envelope: Envelope = { format: 'bkg-package/1', manifest, signature: { alg: SIGNATURE_ALGORITHM, value }, publisher: member.certPem }
      await expectPackageError(() => verifyEnvelope(envelope, { caPem }), 'publisher_not_publisher', new RegExp(member.cert.peerId))
    })

    it('a manifest naming another publisher than the signer → publisher_mismatch', async () => {
      const namesMember: Manifest = {
        ...goodEnvelope.manifest,
        publisher: { peerId: member.cert.peerId, name: member.cert.name, serial: member.cert.serial }
      }
      const envelope = signManifest(namesMember, publisher, publisher.cert)
      await expectPackageError(() => verifyEnvelope(envelope, { caPem }), 'publisher_mismatch')
      // the right PeerId but another certificate serial (e.g. a re-issued certificate) is a mismatch too
      const otherSerial: Manifest = { ...goodEnvelope.manifest, publisher: { ...goodEnvelope.manifest.publisher, serial: 'abc123' } }
      await expectPackageError(() => verifyEnvelope(signManifest(otherSerial, publisher, publisher.cert), { caPem }), 'publisher_mismatch')
      // a certificate swapped under someone else's signed manifest
      await expectPackageError(() => verifyEnvelope({ ...goodEnvelope, publisher: revokee.certPem }, { caPem }), 'publisher_mismatch')
    })

    it('rollback: older than the version accepted here → version_rollback; equal or newer passes', async () => {
      await expectPackageError(() => verifyEnvelope(goodEnvelope, { caPem, latestVersion: '1.2.0' }), 'version_rollback', /tiny@1\.1\.0.*tiny@1\.2\.0/)
      await expectPackageError(() => verifyEnvelope(goodEnvelope, { caPem, latestVersion: '1.1.1-rc.1' }), 'version_rollback')
      for (const latestVersion of ['1.1.0', '1.0.9', '1.1.0-rc.1', '0.0.1', null]) {
        expect(verifyEnvelope(goodEnvelope, { caPem, latestVersion }).manifest.version).toBe('1.1.0')
      }
    })

    it('content tampering: one flipped byte in any file → content_mismatch naming the file', async () => {
      const bytes = await readFile(good)
      const opened = await openPackage(good)
      let offset = opened.dataOffset
      for (const file of goodEnvelope.manifest.files) {
        if (file.size > 0) {
          const tampered = Buffer.from(bytes)
          tampered[offset + Math.floor(file.size / 2)] ^= 0x80
          const out = join(dir, `tampered-${file.path.replace('/', '_')}.bkg`)
          await writeFile(out, tampered)
          const reopened = await openPackage(out)
          verifyEnvelope(reopened.envelope, { caPem })
          await expectPackageError(() => verifyPackageContent(out, reopened), 'content_mismatch', new RegExp(`^${file.path}:`))
        }
        offset += file.size
      }
      // bytes moved between two files (same total, every size intact) are caught as well
      const swapped = Buffer.from(bytes)
      const firstNonEmpty = goodEnvelope.manifest.files.findIndex((f) => f.size > 0)
      let start = opened.dataOffset
      for (let i = 0; i < firstNonEmpty; i++) start += goodEnvelope.manifest.files[i].size
      let other = swapped.length - 1
      while (swapped[other] === swapped[start]) other--
      expect(other).toBeGreaterThan(start + goodEnvelope.manifest.files[firstNonEmpty].size)
      ;[swapped[start], swapped[other]] = [swapped[other], swapped[start]]
      expect(swapped.equals(bytes)).toBe(false)
      const out = join(dir, 'swapped.bkg')
      await writeFile(out, swapped)
      await expectPackageError(async () => await verifyPackageContent(out, await openPackage(out)), 'content_mismatch')
    })

    it('truncated files and trailing garbage → package_malformed', async () => {
      const bytes = await readFile(good)
      const opened = await openPackage(good)
      const cases: Array<[string, Buffer, RegExp]> = [
        ['one byte short', bytes.subarray(0, bytes.length - 1), /content bytes; its manifest declares/],
        ['cut inside the content', bytes.subarray(0, opened.dataOffset + 100), /content bytes; its manifest declares/],
        ['cut at the end of the envelope', bytes.subarray(0, opened.dataOffset), /content bytes; its manifest declares/],
        ['cut inside the envelope', bytes.subarray(0, opened.dataOffset - 10), /truncated inside its envelope/],
        ['cut inside the header', bytes.subarray(0, 6), /shorter than its header/],
        ['empty file', Buffer.alloc(0), /shorter than its header/],
        ['one trailing byte', Buffer.concat([bytes, Buffer.from([0])]), /content bytes; its manifest declares/],
        ['trailing garbage', Buffer.concat([bytes, randomBytes(4096)]), /content bytes; its manifest declares/],
        ['wrong magic', Buffer.concat([Buffer.from('BKGPKG2\n'), bytes.subarray(8)]), /wrong magic/],
        ['not a package at all', Buffer.from('{"format":"bkg-package/1"}\n'.repeat(10)), /not a \.bkg package/],
        ['a zip file', Buffer.concat([Buffer.from('PK\u0003\u0004'), randomBytes(200)]), /not a \.bkg package/]
      ]
      for (const [label, content, message] of cases) {
        const out = join(dir, `malformed-${label.replace(/\W+/g, '-')}.bkg`)
        await writeFile(out, content)
        const err = await expectPackageError(() => openPackage(out), 'package_malformed', message)
        expect(err.message, label).not.toMatch(/^\s+at /m)
      }
      await expectPackageError(() => openPackage(join(dir, 'no-such.bkg')), 'package_malformed', /no such file/)
    })

    it('a directory given as the package → package_malformed', async () => {
      await expectPackageError(() => openPackage(modelDir), 'package_malformed')
    })

    it('packing a path that does not exist or an empty directory → manifest_invalid, nothing written', async () => {
      const out = join(dir, 'nothing.bkg')
      await expectPackageError(() => packModel(packInit({ source: join(dir, 'does-not-exist'), out })), 'manifest_invalid', /does-not-exist/)
      const empty = join(dir, 'empty-model')
      await mkdir(join(empty, 'nested', 'deeper'), { recursive: true })
      await expectPackageError(() => packModel(packInit({ source: empty, out })), 'manifest_invalid', /holds no files/)
      expect(await pathExists(out)).toBe(false)
    })

    it('packing with an invalid name, version, licence or chunk size → manifest_invalid naming the field, nothing written', async () => {
      const out = join(dir, 'invalid.bkg')
      const single = join(modelDir, 'sub', 'config.json')
      await expectPackageError(() => packModel(packInit({ source: single, out, name: 'Tiny' })), 'manifest_invalid', /^name:/)
      await expectPackageError(() => packModel(packInit({ source: single, out, version: 'v1' })), 'manifest_invalid', /^version:/)
      await expectPackageError(() => packModel(packInit({ source: single, out, licence: 'my licence' })), 'manifest_invalid', /^licence:/)
      await expectPackageError(() => packModel(packInit({ source: single, out, chunkSize: 1000 })), 'manifest_invalid', /^chunkSize:/)
      expect(await pathExists(out)).toBe(false)
      expect((await stat(good)).size).toBeGreaterThan(3 * MiB)
    })

    it('refusals are PackageErrors, never other exceptions, for a good envelope under bad options', async () => {
      const err = await expectPackageError(() => verifyEnvelope(goodEnvelope, { caPem: publisher.certPem }), 'publisher_unknown')
      expect(err).toBeInstanceOf(PackageError)
    })
  })

  it('verifyEnvelope refuses a mutated publisher certificate with a PackageError, never another exception (fuzz)', () => {
    const seed = Number(process.env.BKG_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
    const pem = publisher.certPem
    const body = pem.indexOf('\n') + 1
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(), fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-\n ')), { minLength: 1, maxLength: 6 }), (edits) => {
      const chars = pem.split('')
      for (const [at, char] of edits) chars[body + (at % (pem.length - body - 30))] = char
      const mutated = chars.join('')
      try {
        const accepted = verifyEnvelope({ ...goodEnvelope, publisher: mutated }, { caPem })
        // only an edit the PEM decoder ignores (white space, stray characters) can leave it acceptable
        expect(accepted.publisher.fingerprint).toBe(publisher.cert.fingerprint)
      } catch (err) {
        if (!(err instanceof PackageError)) throw new Error(`threw ${(err as Error).constructor.name}: ${(err as Error).message}`)
        expect(['publisher_unknown', 'signature_invalid', 'publisher_mismatch']).toContain(err.code)
      }
    }), { seed, numRuns: 300 })
  })

  it('a copied package verifies like the original (no dependence on its path)', async () => {
    const copy = join(dir, 'copy.bkg')
    await copyFile(good, copy)
    const opened = await openPackage(copy)
    verifyEnvelope(opened.envelope, { caPem })
    await verifyPackageContent(copy, opened)
  })
})
