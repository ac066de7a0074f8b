import { describe, expect, it } from 'vitest'
import { prng } from '../helpers/prng.ts'
import { AdmissionFrameError, decodeHello, decodeVerdict, encodeFrame, MAX_ADMISSION_FRAME_BYTES, type AdmissionHello } from '../../protocols/admission.ts'
import { ADMISSION_PROTOCOL } from '../../protocols/ids.ts'

const CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
const json = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value))

function frameError (fn: () => unknown): AdmissionFrameError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(AdmissionFrameError)
    expect((err as AdmissionFrameError).code).toBe('admission_frame_malformed')
    return err as AdmissionFrameError
  }
  throw new Error('expected an AdmissionFrameError, nothing was thrown')
}

describe('admission hello frames', () => {
  it('round-trip with and without a CRL', () => {
    const hello: AdmissionHello = { protocol: ADMISSION_PROTOCOL, cert: CERT }
    expect(decodeHello(encodeFrame(hello))).toEqual(hello)
    const withCrl: AdmissionHello = { protocol: ADMISSION_PROTOCOL, cert: CERT, crl: '-----BEGIN X509 CRL-----\nx\n-----END X509 CRL-----' }
    expect(decodeHello(encodeFrame(withCrl))).toEqual(withCrl)
  })

  it('refuses bytes that are not JSON or not UTF-8', () => {
    expect(frameError(() => decodeHello(new TextEncoder().encode('{"protocol":'))).message).toMatch(/not UTF-8 JSON/)
    frameError(() => decodeHello(new Uint8Array(0)))
    frameError(() => decodeHello(new Uint8Array([0xff, 0xfe, 0x7b, 0x7d])))
    // a lone continuation byte inside an otherwise valid JSON string
    frameError(() => decodeHello(new Uint8Array([0x22, 0x80, 0x22])))
  })

  it('refuses a wrong protocol', () => {
    frameError(() => decodeHello(json({ protocol: '/bkg/admission/2.0.0', cert: CERT })))
    frameError(() => decodeHello(json({ protocol: '/noise', cert: CERT })))
    frameError(() => decodeHello(json({ cert: CERT })))
  })

  it('refuses an empty, missing, non-string or oversize certificate', () => {
    frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: '' })))
    frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL })))
    frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: 42 })))
    expect(decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: 'x'.repeat(16 * 1024) })).cert).toHaveLength(16 * 1024)
    frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: 'x'.repeat(16 * 1024 + 1) })))
  })

  it('refuses an oversize CRL', () => {
    frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: CERT, crl: 'c'.repeat(480 * 1024 + 1) })))
  })

  it('refuses extra keys', () => {
    frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: CERT, admin: true })))
    frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: CERT, __proto__x: 1 })))
  })

  it('refuses JSON that is not an object', () => {
    for (const value of [null, 1, 'hello', [ADMISSION_PROTOCOL, CERT], true]) frameError(() => decodeHello(json(value)))
  })

  it('a maximal valid hello fits in one frame', () => {
    const bytes = encodeFrame({ protocol: ADMISSION_PROTOCOL, cert: 'x'.repeat(16 * 1024), crl: 'c'.repeat(480 * 1024) })
    expect(bytes.byteLength).toBeLessThanOrEqual(MAX_ADMISSION_FRAME_BYTES)
  })
})

describe('admission verdict frames', () => {
  it('round-trip', () => {
    expect(decodeVerdict(encodeFrame({ ok: true }))).toEqual({ ok: true })
    const refusal = { ok: false as const, code: 'cert_revoked', message: 'certificate 01 is revoked' }
    expect(decodeVerdict(encodeFrame(refusal))).toEqual(refusal)
  })

  it('refuses malformed verdicts', () => {
    frameError(() => decodeVerdict(json({ ok: 'yes' })))
    frameError(() => decodeVerdict(json({})))
    frameError(() => decodeVerdict(json({ ok: false })))
    frameError(() => decodeVerdict(json({ ok: false, code: 'x' })))
    frameError(() => decodeVerdict(json({ ok: true, code: 'x', message: 'y' })))
    frameError(() => decodeVerdict(json({ ok: false, code: 'c'.repeat(65), message: 'm' })))
    frameError(() => decodeVerdict(json({ ok: false, code: 'c', message: 'm'.repeat(1025) })))
    frameError(() => decodeVerdict(json({ ok: false, code: 'c', message: 'm', extra: 1 })))
    frameError(() => decodeVerdict(new TextEncoder().encode('ok')))
  })

  it('a hello is not a verdict and a verdict is not a hello', () => {
    frameError(() => decodeVerdict(encodeFrame({ protocol: ADMISSION_PROTOCOL, cert: CERT })))
    frameError(() => decodeHello(encodeFrame({ ok: true })))
  })
})

describe('admission frame decoding under random input (seeded)', () => {
  const SEED = 0xb4c9
  const valid = encodeFrame({ protocol: ADMISSION_PROTOCOL, cert: CERT, crl: 'crl' })

  /** Every input either decodes to a schema-valid value or throws AdmissionFrameError, nothing else. */
  function decodesOrRefuses (bytes: Uint8Array): void {
    for (const decode of [decodeHello, decodeVerdict] as Array<(b: Uint8Array) => unknown>) {
      try {
        const value = decode(bytes) as Record<string, unknown>
        if (decode === decodeHello) {
          expect(value.protocol).toBe(ADMISSION_PROTOCOL)
          expect(typeof value.cert).toBe('string')
        } else {
          expect(typeof value.ok).toBe('boolean')
        }
      } catch (err) {
        expect(err).toBeInstanceOf(AdmissionFrameError)
      }
    }
  }

  it('random bytes', () => {
    const random = prng(SEED)
    for (let i = 0; i < 500; i++) {
      const bytes = new Uint8Array(Math.floor(random() * 64))
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256)
      decodesOrRefuses(bytes)
    }
  })

  it('mutations of a valid hello', () => {
    const random = prng(SEED + 1)
    let refused = 0
    for (let i = 0; i < 500; i++) {
      const bytes = Uint8Array.from(valid)
      const flips = 1 + Math.floor(random() * 3)
      for (let k = 0; k < flips; k++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256)
      try {
        decodeHello(bytes)
      } catch (err) {
        expect(err).toBeInstanceOf(AdmissionFrameError)
        refused++
      }
      decodesOrRefuses(bytes)
    }
    // most byte flips break the JSON or the protocol literal
    expect(refused).toBeGreaterThan(250)
  })

  it('random JSON objects with the right protocol and random extra keys are refused', () => {
    const random = prng(SEED + 2)
    const alphabet = 'abcdefghijklmnopqrstuvwxyz_'
    for (let i = 0; i < 200; i++) {
      let key = ''
      const length = 1 + Math.floor(random() * 8)
      for (let j = 0; j < length; j++) key += alphabet[Math.floor(random() * alphabet.length)]
      if (key === 'crl' || key === 'cert' || key === 'protocol') continue
      frameError(() => decodeHello(json({ protocol: ADMISSION_PROTOCOL, cert: CERT, [key]: random() })))
    }
  })
})
