import fc from 'fast-check'
import semver from 'semver'
import { describe, expect, it } from 'vitest'
import {
  canonicalJson, decodeEnvelope, decodeHeader, encodeEnvelope, ENVELOPE_FORMAT, HEADER_BYTES, Manifest, MANIFEST_FORMAT,
  MAX_CHUNK_SIZE, MAX_ENVELOPE_BYTES, MAX_FILES, MIN_CHUNK_SIZE, PACKAGE_MAGIC, PackageError, SIGNATURE_ALGORITHM,
  SIGNATURE_CONTEXT, signedBytes, type Envelope, type PackageErrorCode
} from '../../protocols/model-package.ts'
import { expectPackageErrorSync, hex, jsonBytes, rawCid, sampleEnvelope, sampleManifest } from './helpers.ts'

/** Replay a failure with BKG_FUZZ_SEED=<seed printed by fast-check>; BKG_FUZZ_RUNS scales the effort. */
const SEED = Number(process.env.BKG_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
const RUNS = Number(process.env.BKG_FUZZ_RUNS ?? 2000)
const params = <T>(numRuns = RUNS): fc.Parameters<T> => ({ seed: SEED, numRuns })

/** The contract of the parsers: return normally or throw PackageError, nothing else, ever. */
function returnsOrPackageError<T> (fn: () => T): T | PackageError {
  try {
    return fn()
  } catch (err) {
    if (!(err instanceof PackageError)) {
      throw new Error(`threw ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)} instead of a PackageError`)
    }
    const codes: PackageErrorCode[] = ['package_malformed', 'manifest_invalid']
    if (!codes.includes(err.code)) throw new Error(`unexpected PackageError code ${err.code}: ${err.message}`)
    return err
  }
}

function withHeader (json: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + json.byteLength)
  out.set(PACKAGE_MAGIC)
  new DataView(out.buffer).setUint32(PACKAGE_MAGIC.byteLength, json.byteLength)
  out.set(json, HEADER_BYTES)
  return out
}

// ------------------------------------------------------------------ arbitraries

const hexString = (min: number, max: number): fc.Arbitrary<string> =>
  fc.array(fc.constantFrom(...'0123456789abcdef'), { minLength: min, maxLength: max }).map((chars) => chars.join(''))
const digest32 = fc.uint8Array({ minLength: 32, maxLength: 32 })
const pathSegment = fc.stringMatching(/^[A-Za-z0-9._-]{1,20}$/).filter((s) => s !== '.' && s !== '..')
const filePath = fc.array(pathSegment, { minLength: 1, maxLength: 4 }).map((segments) => segments.join('/'))
const validVersion = fc.tuple(fc.nat(999), fc.nat(999), fc.nat(999), fc.option(fc.constantFrom('alpha', 'beta.2', 'rc.1'), { nil: undefined }))
  .map(([a, b, c, pre]) => `${a}.${b}.${c}${pre === undefined ? '' : `-${pre}`}`)
const validFile = fc.record({
  path: filePath,
  size: fc.oneof(fc.nat(), fc.constant(0), fc.constant(Number.MAX_SAFE_INTEGER)),
  sha256: digest32.map(hex),
  cid: digest32.map(rawCid)
})
const validManifest: fc.Arbitrary<Manifest> = fc.record({
  format: fc.constant(MANIFEST_FORMAT),
  name: fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,63}$/),
  version: validVersion,
  architecture: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/),
  licence: fc.constantFrom('MIT', 'Apache-2.0', 'NOASSERTION', 'LicenseRef-internal', 'MIT OR Apache-2.0', 'GPL-2.0-only WITH Classpath-exception-2.0', 'CC-BY-4.0 AND MIT'),
  createdAt: fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2200-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString()),
  publisher: fc.record({
    peerId: fc.string({ minLength: 1, maxLength: 128 }),
    name: fc.string({ minLength: 1, maxLength: 64 }),
    serial: hexString(1, 64)
  }),
  chunkSize: fc.integer({ min: MIN_CHUNK_SIZE, max: MAX_CHUNK_SIZE }),
  // a path must not also be another file's directory: such a package cannot be laid out on disk
  files: fc.uniqueArray(validFile, { minLength: 1, maxLength: 5, selector: (f) => f.path })
    .filter((files) => files.every((f) => !files.some((g) => g.path.startsWith(`${f.path}/`))))
})

/** anything: a valid-looking value for the field half the time, a random JSON value otherwise */
const fieldOr = <T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof(valid, fc.jsonValue({ maxDepth: 2 }), fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null))
const manifestLike = fc.record({
  format: fieldOr(fc.constant(MANIFEST_FORMAT)),
  name: fieldOr(fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,63}$/)),
  version: fieldOr(validVersion),
  architecture: fieldOr(fc.constant('llama')),
  licence: fieldOr(fc.constantFrom('MIT', 'not a licence!', 'MIT OR')),
  createdAt: fieldOr(fc.constant('2024-01-01T00:00:00Z')),
  publisher: fieldOr(fc.record({ peerId: fieldOr(fc.constant('p')), name: fieldOr(fc.constant('n')), serial: fieldOr(hexString(1, 64)) })),
  chunkSize: fieldOr(fc.integer({ min: 0, max: 2 * MAX_CHUNK_SIZE })),
  files: fieldOr(fc.array(fc.record({
    path: fieldOr(filePath),
    size: fieldOr(fc.integer({ min: -10, max: 1e6 })),
    sha256: fieldOr(digest32.map(hex)),
    cid: fieldOr(fc.oneof(digest32.map(rawCid), fc.constant('QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG')))
  }, { requiredKeys: [] }), { maxLength: 4 })),
  extra: fc.jsonValue({ maxDepth: 1 })
}, { requiredKeys: [] })

// ------------------------------------------------------------------ canonical JSON

describe('canonicalJson', () => {
  it('sorts keys by UTF-16 code units at every level and writes no white space', () => {
    expect(canonicalJson({ b: 1, a: [{ z: 'x y', y: null }, 2], c: { e: true, d: false } }))
      .toBe('{"a":[{"y":null,"z":"x y"},2],"b":1,"c":{"d":false,"e":true}}')
    // integer-like keys sort as strings, not numerically (as JS property order would)
    expect(canonicalJson({ 9: 1, 10: 2, b: 3 })).toBe('{"10":2,"9":1,"b":3}')
    // UTF-16 code-unit order: a surrogate pair (U+1F600) sorts before U+FF61
    expect(canonicalJson({ '\uff61': 1, '\u{1f600}': 2 })).toBe('{"\u{1f600}":2,"\uff61":1}')
    expect(canonicalJson({ a: undefined, b: 1 })).toBe('{"b":1}')
  })

  it('does not depend on key insertion order (property)', () => {
    const intJson = fc.letrec((tie) => ({
      value: fc.oneof({ depthSize: 'small', maxDepth: 4 }, fc.string(), fc.maxSafeInteger(), fc.boolean(), fc.constant(null),
        fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 6 }), tie('value'), { maxKeys: 5 }))
    })).value
    const reorder = (value: unknown, reverse: boolean): unknown => {
      if (Array.isArray(value)) return value.map((v) => reorder(v, reverse))
      if (value !== null && typeof value === 'object') {
        const entries = Object.entries(value).map(([k, v]) => [k, reorder(v, reverse)] as const)
        entries.sort(([a], [b]) => (a < b ? 1 : a > b ? -1 : 0) * (reverse ? 1 : -1))
        const out: Record<string, unknown> = {}
        for (const [k, v] of entries) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
        return out
      }
      return value
    }
    fc.assert(fc.property(intJson, (value) => {
      const text = canonicalJson(value)
      expect(canonicalJson(reorder(value, true))).toBe(text)
      expect(canonicalJson(reorder(value, false))).toBe(text)
      expect(JSON.parse(text)).toEqual(value)
      // no white space outside string literals
      expect(text.replace(/"(?:[^"\\]|\\.)*"/g, '""')).not.toMatch(/\s/)
    }), params(500))
  })

  it('refuses non-integers and values JSON cannot hold', () => {
    for (const bad of [1.5, -0.1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, { nested: [1, 2.5] }]) {
      expectPackageErrorSync(() => canonicalJson(bad), 'manifest_invalid', /integers only/)
    }
    expectPackageErrorSync(() => canonicalJson(10n), 'manifest_invalid', /bigint/)
    expectPackageErrorSync(() => canonicalJson({ f: () => 1 }), 'manifest_invalid', /function/)
    expectPackageErrorSync(() => canonicalJson([undefined]), 'manifest_invalid')
  })

  it('signedBytes is the context string followed by the canonical manifest', () => {
    const manifest = sampleManifest()
    const bytes = signedBytes(manifest)
    const text = new TextDecoder().decode(bytes)
    expect(SIGNATURE_CONTEXT).toBe('bkg-manifest-signature/1\n')
    expect(text.startsWith(SIGNATURE_CONTEXT)).toBe(true)
    expect(text.slice(SIGNATURE_CONTEXT.length)).toBe(canonicalJson(manifest))
    // the same manifest with its keys in another order signs the same bytes
    const shuffled = Object.fromEntries(Object.entries(manifest).reverse()) as typeof manifest
    expect(Buffer.from(signedBytes(shuffled)).equals(Buffer.from(bytes))).toBe(true)
    // and any change of content changes them
    expect(Buffer.from(signedBytes({ ...manifest, version: '1.0.1' })).equals(Buffer.from(bytes))).toBe(false)
  })
})

// ------------------------------------------------------------------ envelope and header

describe('envelope encoding', () => {
  it('encodes magic, big-endian length and JSON; decodeHeader and decodeEnvelope read it back', () => {
    const envelope = sampleEnvelope()
    const bytes = encodeEnvelope(envelope)
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('BKGPKG1\n')
    const length = decodeHeader(bytes.subarray(0, HEADER_BYTES))
    expect(length).toBe(bytes.byteLength - HEADER_BYTES)
    expect(length).toBe(new DataView(bytes.buffer).getUint32(8, false))
    expect(decodeEnvelope(bytes.subarray(HEADER_BYTES))).toEqual(envelope)
  })

  it('decodeHeader honours the byte offset of a subarray', () => {
    const bytes = encodeEnvelope(sampleEnvelope())
    const shifted = new Uint8Array(bytes.byteLength + 5)
    shifted.set(bytes, 5)
    expect(decodeHeader(shifted.subarray(5))).toBe(bytes.byteLength - HEADER_BYTES)
  })

  it('refuses headers that are short, of the wrong magic, or of an out-of-range length', () => {
    expectPackageErrorSync(() => decodeHeader(new Uint8Array(0)), 'package_malformed', /shorter than its header/)
    expectPackageErrorSync(() => decodeHeader(PACKAGE_MAGIC), 'package_malformed', /shorter than its header/)
    expectPackageErrorSync(() => decodeHeader(new TextEncoder().encode('PK\u0003\u0004 not a bkg')), 'package_malformed', /magic/)
    const header = (length: number): Uint8Array => {
      const out = new Uint8Array(HEADER_BYTES)
      out.set(PACKAGE_MAGIC)
      new DataView(out.buffer).setUint32(8, length)
      return out
    }
    expectPackageErrorSync(() => decodeHeader(header(0)), 'package_malformed', /envelope length 0/)
    expectPackageErrorSync(() => decodeHeader(header(MAX_ENVELOPE_BYTES + 1)), 'package_malformed', /out of range/)
    expectPackageErrorSync(() => decodeHeader(header(0xffffffff)), 'package_malformed', /out of range/)
    expect(decodeHeader(header(MAX_ENVELOPE_BYTES))).toBe(MAX_ENVELOPE_BYTES)
    expect(decodeHeader(header(1))).toBe(1)
  })

  it('encodeEnvelope accepts exactly MAX_ENVELOPE_BYTES and refuses one more with package_too_large', () => {
    const base = sampleEnvelope()
    const baseLength = jsonBytes({ ...base, publisher: '' }).byteLength
    const atLimit = { ...base, publisher: 'x'.repeat(MAX_ENVELOPE_BYTES - baseLength) }
    expect(encodeEnvelope(atLimit).byteLength).toBe(HEADER_BYTES + MAX_ENVELOPE_BYTES)
    const over = { ...base, publisher: 'x'.repeat(MAX_ENVELOPE_BYTES - baseLength + 1) }
    expectPackageErrorSync(() => encodeEnvelope(over), 'package_too_large', new RegExp(`${MAX_ENVELOPE_BYTES + 1} bytes.*${MAX_ENVELOPE_BYTES}`))
    // the limit counts UTF-8 bytes, not characters
    const multiByte = { ...base, publisher: 'é'.repeat(Math.ceil((MAX_ENVELOPE_BYTES - baseLength) / 2) + 1) }
    expectPackageErrorSync(() => encodeEnvelope(multiByte), 'package_too_large')
  })
})

// ------------------------------------------------------------------ every malformed field

describe('decodeEnvelope refuses every malformed field, naming it', () => {
  const manifest = sampleManifest()
  const file0 = manifest.files[0]
  const manyFiles = Array.from({ length: MAX_FILES + 1 }, (_, i) => ({ ...file0, path: `f${i}` }))
  const cases: Array<[string, unknown, PackageErrorCode, RegExp]> = [
    ['name with uppercase', { ...manifest, name: 'Tiny' }, 'manifest_invalid', /manifest: name:/],
    ['name too long', { ...manifest, name: 'a'.repeat(65) }, 'manifest_invalid', /manifest: name:/],
    ['name empty', { ...manifest, name: '' }, 'manifest_invalid', /manifest: name:/],
    ['version v1', { ...manifest, version: 'v1' }, 'manifest_invalid', /manifest: version: a semantic version/],
    ['version 1', { ...manifest, version: '1' }, 'manifest_invalid', /manifest: version:/],
    ['version v1.0.0 (semver would clean it)', { ...manifest, version: 'v1.0.0' }, 'manifest_invalid', /manifest: version:/],
    ['version with spaces', { ...manifest, version: ' 1.0.0' }, 'manifest_invalid', /manifest: version:/],
    ['format of another version', { ...manifest, format: 'bkg-manifest/2' }, 'manifest_invalid', /manifest: format:/],
    ['path with ..', { ...manifest, files: [{ ...file0, path: 'a/../../etc/passwd' }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['path ..', { ...manifest, files: [{ ...file0, path: '..' }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['path .', { ...manifest, files: [{ ...file0, path: 'a/./b' }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['path with a leading /', { ...manifest, files: [{ ...file0, path: '/etc/passwd' }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['path with a trailing /', { ...manifest, files: [{ ...file0, path: 'dir/' }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['path with a backslash', { ...manifest, files: [{ ...file0, path: '..\\x' }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['empty path', { ...manifest, files: [{ ...file0, path: '' }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['path too long', { ...manifest, files: [{ ...file0, path: Array(6).fill('a'.repeat(100)).join('/') }] }, 'manifest_invalid', /manifest: files\.0\.path:/],
    ['duplicate paths', { ...manifest, files: [file0, { ...manifest.files[1], path: file0.path }] }, 'manifest_invalid', /manifest: files: file paths must be unique/],
    ['a file that is also a directory', { ...manifest, files: [{ ...file0, path: 'a' }, { ...manifest.files[1], path: 'a/b' }] }, 'manifest_invalid', /manifest: files: no file path may also be the directory of another/],
    ['0 files', { ...manifest, files: [] }, 'manifest_invalid', /manifest: files:/],
    [`${MAX_FILES + 1} files`, { ...manifest, files: manyFiles }, 'manifest_invalid', /manifest: files:/],
    ['chunkSize too small', { ...manifest, chunkSize: MIN_CHUNK_SIZE - 1 }, 'manifest_invalid', /manifest: chunkSize:/],
    ['chunkSize too large', { ...manifest, chunkSize: MAX_CHUNK_SIZE + 1 }, 'manifest_invalid', /manifest: chunkSize:/],
    ['chunkSize not an integer', { ...manifest, chunkSize: 100_000.5 }, 'manifest_invalid', /manifest: chunkSize:/],
    ['negative size', { ...manifest, files: [{ ...file0, size: -1 }] }, 'manifest_invalid', /manifest: files\.0\.size:/],
    ['fractional size', { ...manifest, files: [{ ...file0, size: 1.5 }] }, 'manifest_invalid', /manifest: files\.0\.size:/],
    ['size beyond MAX_SAFE_INTEGER', { ...manifest, files: [{ ...file0, size: 2 ** 53 }] }, 'manifest_invalid', /manifest: files\.0\.size:/],
    ['size as a string', { ...manifest, files: [{ ...file0, size: '10' }] }, 'manifest_invalid', /manifest: files\.0\.size:/],
    ['unknown key in the manifest', { ...manifest, extra: 1 }, 'manifest_invalid', /manifest: .*extra/],
    ['unknown key in a file', { ...manifest, files: [{ ...file0, mode: 0o755 }] }, 'manifest_invalid', /manifest: files\.0.*mode/],
    ['unknown key in the publisher', { ...manifest, publisher: { ...manifest.publisher, roles: ['admin'] } }, 'manifest_invalid', /manifest: publisher.*roles/],
    ['bad CID', { ...manifest, files: [{ ...file0, cid: 'bafy-not-a-cid' }] }, 'manifest_invalid', /manifest: files\.0\.cid: a CIDv1 string/],
    ['CIDv0', { ...manifest, files: [{ ...file0, cid: 'QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG' }] }, 'manifest_invalid', /manifest: files\.0\.cid: a CIDv1 string/],
    ['sha256 uppercase', { ...manifest, files: [{ ...file0, sha256: file0.sha256.toUpperCase() }] }, 'manifest_invalid', /manifest: files\.0\.sha256:/],
    ['sha256 too short', { ...manifest, files: [{ ...file0, sha256: file0.sha256.slice(1) }] }, 'manifest_invalid', /manifest: files\.0\.sha256:/],
    ['sha256 not hex', { ...manifest, files: [{ ...file0, sha256: 'z'.repeat(64) }] }, 'manifest_invalid', /manifest: files\.0\.sha256:/],
    ['licence with spaces', { ...manifest, licence: 'my own licence' }, 'manifest_invalid', /manifest: licence:/],
    ['licence garbage', { ...manifest, licence: 'MIT; rm -rf /' }, 'manifest_invalid', /manifest: licence:/],
    ['licence dangling operator', { ...manifest, licence: 'MIT OR' }, 'manifest_invalid', /manifest: licence:/],
    ['licence empty', { ...manifest, licence: '' }, 'manifest_invalid', /manifest: licence:/],
    ['createdAt not a date', { ...manifest, createdAt: 'yesterday' }, 'manifest_invalid', /manifest: createdAt:/],
    ['publisher serial not hex', { ...manifest, publisher: { ...manifest.publisher, serial: 'XYZ' } }, 'manifest_invalid', /manifest: publisher\.serial:/],
    ['publisher peerId empty', { ...manifest, publisher: { ...manifest.publisher, peerId: '' } }, 'manifest_invalid', /manifest: publisher\.peerId:/],
    ['architecture with a slash', { ...manifest, architecture: 'x/y' }, 'manifest_invalid', /manifest: architecture:/],
    ['manifest an array', [manifest], 'manifest_invalid', /manifest: \(root\)/]
  ]

  it.each(cases)('%s', (_label, bad, code, message) => {
    expect(Manifest.safeParse(manifest).success).toBe(true)
    const envelope = { ...sampleEnvelope(), manifest: bad }
    expectPackageErrorSync(() => decodeEnvelope(jsonBytes(envelope)), code, message)
  })

  const envelopeCases: Array<[string, unknown, RegExp]> = [
    ['unknown envelope format', { ...sampleEnvelope(), format: 'bkg-package/2' }, /package envelope: format:/],
    ['unknown key in the envelope', { ...sampleEnvelope(), extra: true }, /package envelope: .*extra/],
    ['other signature algorithm', { ...sampleEnvelope(), signature: { alg: 'Ed25519', value: 'AAAA' } }, /package envelope: signature\.alg:/],
    ['signature not base64', { ...sampleEnvelope(), signature: { alg: SIGNATURE_ALGORITHM, value: 'not base64!' } }, /package envelope: signature\.value:/],
    ['signature oversize', { ...sampleEnvelope(), signature: { alg: SIGNATURE_ALGORITHM, value: 'A'.repeat(2049) } }, /package envelope: signature\.value:/],
    ['publisher empty', { ...sampleEnvelope(), publisher: '' }, /package envelope: publisher:/],
    ['publisher oversize', { ...sampleEnvelope(), publisher: 'x'.repeat(16 * 1024 + 1) }, /package envelope: publisher:/],
    ['envelope an array', [sampleEnvelope()], /package envelope: \(root\)/],
    ['envelope null', null, /package envelope: \(root\)/],
    ['manifest missing', { ...sampleEnvelope(), manifest: undefined }, /package envelope: manifest:/]
  ]

  it.each(envelopeCases)('%s', (_label, bad, message) => {
    expectPackageErrorSync(() => decodeEnvelope(jsonBytes(bad)), 'package_malformed', message)
  })

  it('refuses bytes that are not UTF-8 JSON', () => {
    expectPackageErrorSync(() => decodeEnvelope(new Uint8Array(0)), 'package_malformed', /not UTF-8 JSON/)
    expectPackageErrorSync(() => decodeEnvelope(new TextEncoder().encode('{"format":')), 'package_malformed', /not UTF-8 JSON/)
    // a valid envelope with one byte turned into invalid UTF-8 inside a string
    const bytes = jsonBytes(sampleEnvelope())
    bytes[bytes.indexOf(0x61 /* a */)] = 0xff
    expectPackageErrorSync(() => decodeEnvelope(bytes), 'package_malformed', /not UTF-8 JSON/)
  })

  it('accepts the edge values the schema allows', () => {
    const edge = sampleManifest({
      name: '0' + 'a'.repeat(63),
      version: '0.0.0-rc.1',
      licence: 'GPL-2.0-only WITH Classpath-exception-2.0 OR MIT',
      chunkSize: MIN_CHUNK_SIZE,
      files: Array.from({ length: MAX_FILES }, (_, i) => ({ ...sampleManifest().files[0], path: `d/${i}.bin`, size: i === 0 ? Number.MAX_SAFE_INTEGER : 0 }))
    })
    expect(decodeEnvelope(jsonBytes(sampleEnvelope(edge))).manifest).toEqual(edge)
    const big = sampleManifest({ chunkSize: MAX_CHUNK_SIZE })
    expect(decodeEnvelope(jsonBytes(sampleEnvelope(big))).manifest.chunkSize).toBe(MAX_CHUNK_SIZE)
  })
})

// ------------------------------------------------------------------ fuzzing

describe('parsers never throw anything but PackageError (fuzz)', () => {
  it('decodeEnvelope on arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1024 }), (bytes) => {
      returnsOrPackageError(() => decodeEnvelope(bytes))
    }), params())
  })

  it('decodeEnvelope on arbitrary JSON values', () => {
    fc.assert(fc.property(fc.jsonValue(), (value) => {
      const result = returnsOrPackageError(() => decodeEnvelope(jsonBytes(value)))
      expect(result).toBeInstanceOf(PackageError) // a random JSON value is never a valid envelope
    }), params())
  })

  it('decodeEnvelope on arbitrary UTF-8 text, including JSON-ish fragments', () => {
    const fragment = fc.oneof(fc.string(), fc.constantFrom('{', '}', '[', ']', '"', ':', ',', '\\u0000', '\\ud800', '"__proto__"', 'null', '1e999', '-0'))
    fc.assert(fc.property(fc.array(fragment, { maxLength: 40 }), (parts) => {
      returnsOrPackageError(() => decodeEnvelope(new TextEncoder().encode(parts.join(''))))
    }), params())
  })

  it('decodeEnvelope on byte-mutated valid envelopes', () => {
    const valid = jsonBytes(sampleEnvelope())
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) })
    )
    fc.assert(fc.property(fc.array(mutation, { minLength: 1, maxLength: 5 }), (mutations) => {
      let bytes = Buffer.from(valid)
      for (const m of mutations) {
        const at = bytes.length === 0 ? 0 : m.at % bytes.length
        switch (m.kind) {
          case 'flip': if (bytes.length > 0) bytes[at] ^= 1 << m.bit; break
          case 'set': if (bytes.length > 0) bytes[at] = m.byte; break
          case 'cut': bytes = bytes.subarray(0, at); break
          case 'insert': bytes = Buffer.concat([bytes.subarray(0, at), m.bytes, bytes.subarray(at)]); break
          case 'delete': bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + m.count)]); break
        }
      }
      const result = returnsOrPackageError(() => decodeEnvelope(bytes))
      if (!(result instanceof PackageError)) {
        // whatever survived the mutations is a complete, valid manifest
        expect(Manifest.safeParse(result.manifest).success).toBe(true)
      }
    }), params())
  })

  it('decodeEnvelope on structurally mutated valid envelopes (a random value at a random place)', () => {
    const valid = sampleEnvelope()
    const paths: Array<Array<string | number>> = []
    const collect = (value: unknown, path: Array<string | number>): void => {
      paths.push(path)
      if (Array.isArray(value)) value.forEach((v, i) => collect(v, [...path, i]))
      else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) collect(v, [...path, k])
    }
    collect(valid, [])
    const replacement = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.string({ unit: 'binary' }), fc.constantFrom('__proto__', '', '..', -1, 1.5, 2 ** 60, null, [], {}))
    fc.assert(fc.property(fc.nat(paths.length - 1), replacement, fc.boolean(), (index, value, asKey) => {
      const wrapper: Record<string, unknown> = { root: JSON.parse(JSON.stringify(valid)) }
      const path = paths[index]
      let target: unknown = wrapper
      let key: string | number = 'root'
      for (const step of path) {
        target = (target as Record<string | number, unknown>)[key]
        key = step
      }
      const holder = target as Record<string | number, unknown>
      if (asKey && typeof value === 'string' && !Array.isArray(holder) && holder !== wrapper) {
        // rename the key instead of replacing its value
        const old = holder[key]
        delete holder[key]
        Object.defineProperty(holder, value, { value: old, enumerable: true, writable: true, configurable: true })
      } else {
        holder[key] = value
      }
      returnsOrPackageError(() => decodeEnvelope(jsonBytes(wrapper.root)))
    }), params())
  })

  it('decodeEnvelope on arbitrary manifest-like objects', () => {
    fc.assert(fc.property(manifestLike, (candidate) => {
      const result = returnsOrPackageError(() => decodeEnvelope(jsonBytes(sampleEnvelope(candidate))))
      const valid = Manifest.safeParse(JSON.parse(JSON.stringify(candidate))).success
      // the result agrees with the schema: accepted exactly when the manifest is valid
      expect(!(result instanceof PackageError)).toBe(valid)
      if (result instanceof PackageError) expect(result.code).toBe('manifest_invalid')
    }), params())
  })

  it('decodeHeader on arbitrary bytes, and on the magic followed by any length', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 32 }), (bytes) => {
      returnsOrPackageError(() => decodeHeader(bytes))
    }), params())
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.uint8Array({ maxLength: 8 }), (length, tail) => {
      const bytes = new Uint8Array(HEADER_BYTES + tail.byteLength)
      bytes.set(PACKAGE_MAGIC)
      new DataView(bytes.buffer).setUint32(8, length)
      bytes.set(tail, HEADER_BYTES)
      const result = returnsOrPackageError(() => decodeHeader(bytes))
      if (length >= 1 && length <= MAX_ENVELOPE_BYTES) expect(result).toBe(length)
      else expect(result).toBeInstanceOf(PackageError)
    }), params())
  })

  it('valid manifests round-trip through encodeEnvelope, decodeHeader and decodeEnvelope (property)', () => {
    fc.assert(fc.property(validManifest, fc.boolean(), (manifest, shuffle) => {
      expect(semver.valid(manifest.version)).toBe(manifest.version)
      const ordered = shuffle ? Object.fromEntries(Object.entries(manifest).reverse()) : manifest
      const envelope: Envelope = { format: ENVELOPE_FORMAT, manifest: ordered as typeof manifest, signature: { alg: SIGNATURE_ALGORITHM, value: 'AAAA' }, publisher: 'pem' }
      const decoded = decodeEnvelope(jsonBytes(envelope))
      expect(decoded.manifest).toEqual(manifest)
      expect(canonicalJson(decoded.manifest)).toBe(canonicalJson(manifest))
      const encoded = encodeEnvelope(envelope)
      const length = decodeHeader(encoded)
      expect(length).toBe(encoded.byteLength - HEADER_BYTES)
      expect(decodeEnvelope(encoded.subarray(HEADER_BYTES, HEADER_BYTES + length))).toEqual(decoded)
      expect(withHeader(jsonBytes(envelope))).toEqual(encoded)
    }), params(1000))
  })
})
