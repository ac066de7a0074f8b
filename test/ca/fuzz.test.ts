import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { prng } from '../helpers/prng.ts'
import {
  CaError, initCa, issueCrl, parseCrl, parseNodeCertificate, revokeCertificate, signNodeCsr, verifyCrl,
  verifyNodeCertificate, verifyNodeCsr
} from '../../ca/index.ts'
import { derToPem, makeNode, makeTempDir, pemToDer } from './helpers.ts'

const SEED = Number(process.env.BKG_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
const ROUNDS = Number(process.env.BKG_FUZZ_ROUNDS ?? 300)

const LABELS = ['CERTIFICATE', 'X509 CRL', 'CERTIFICATE REQUEST']

function makeGenerators (rand: () => number): {
  bytes: (n: number) => Buffer
  int: (n: number) => number
  mutate: (der: Buffer) => Buffer
  garbage: () => string
} {
  const int = (n: number): number => Math.floor(rand() * n)
  const bytes = (n: number): Buffer => {
    const b = Buffer.alloc(n)
    for (let i = 0; i < n; i++) b[i] = int(256)
    return b
  }
  const mutate = (der: Buffer): Buffer => {
    let out: Buffer = Buffer.from(der)
    const edits = 1 + int(4)
    for (let e = 0; e < edits; e++) {
      const at = int(out.length)
      switch (int(6)) {
        case 0: out[at] ^= 1 << int(8); break // bit flip
        case 1: out[at] = int(256); break // byte replace
        case 2: out = out.subarray(0, at); break // truncate
        case 3: out = Buffer.concat([out.subarray(0, at), bytes(1 + int(8)), out.subarray(at)]); break // insert
        case 4: out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + int(16)))]); break // delete
        default: out[at] = [0x00, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff][int(7)] // length-ish bytes
      }
      if (out.length === 0) out = bytes(1)
    }
    // an edit can undo another (or rewrite a byte to its own value): force a change
    if (out.equals(der)) out = Buffer.concat([out, bytes(1)])
    return out
  }
  const garbage = (): string => {
    switch (int(5)) {
      case 0: return bytes(int(512)).toString('binary')
      case 1: return bytes(int(512)).toString('utf8')
      case 2: return derToPem(bytes(1 + int(600)), LABELS[int(LABELS.length)])
      case 3: return `-----BEGIN ${LABELS[int(LABELS.length)]}-----\n${bytes(int(200)).toString('latin1')}\n-----END X-----\n`
      default: {
        // a SEQUENCE header in front of random content, the likeliest to get deep into parsers
        const body = bytes(int(400))
        const head = body.length < 128 ? Buffer.from([0x30, body.length]) : Buffer.from([0x30, 0x82, body.length >> 8, body.length & 0xff])
        return derToPem(Buffer.concat([head, body]), LABELS[int(LABELS.length)])
      }
    }
  }
  return { bytes, int, mutate, garbage }
}

/** Runs `fn`; anything thrown must be a CaError. */
async function onlyCaErrors (what: string, input: string, fn: () => unknown): Promise<'ok' | string> {
  try {
    await fn()
    return 'ok'
  } catch (err) {
    if (err instanceof CaError) return err.code
    throw new Error(`${what} threw a non-CaError (seed ${SEED}): ${String(err)}\ninput: ${JSON.stringify(input)}`, { cause: err })
  }
}

describe(`fuzzing the parsers (seed ${SEED})`, () => {
  let cleanup: () => Promise<void>
  let caPem: string
  let certPem: string
  let csrPem: string
  let crlPem: string

  beforeAll(async () => {
    let dir: string
    ({ dir, cleanup } = await makeTempDir())
    const caDir = join(dir, 'ca')
    ;({ certPem: caPem } = await initCa(caDir))
    const node = await makeNode('fuzz-node')
    csrPem = node.csrPem
    const signed = await signNodeCsr(caDir, csrPem, { roles: ['relay', 'admin'], namespaces: ['lab', 'prod'] })
    certPem = signed.certPem
    await revokeCertificate(caDir, { serial: signed.cert.serial })
    crlPem = (await issueCrl(caDir)).crlPem
  })

  afterAll(async () => { await cleanup() })

  it('random input only ever produces CaError', async () => {
    const g = makeGenerators(prng(SEED))
    for (let i = 0; i < ROUNDS; i++) {
      const input = g.garbage()
      expect(await onlyCaErrors('parseCrl', input, () => parseCrl(input))).not.toBe('ok')
      await onlyCaErrors('verifyCrl', input, () => verifyCrl(input, caPem))
      expect(await onlyCaErrors('parseNodeCertificate', input, () => parseNodeCertificate(input))).not.toBe('ok')
      await onlyCaErrors('verifyNodeCertificate', input, () => verifyNodeCertificate(input, { caPem }))
      await onlyCaErrors('verifyNodeCertificate(caPem)', input, () => verifyNodeCertificate(certPem, { caPem: input }))
      expect(await onlyCaErrors('verifyNodeCsr', input, async () => await verifyNodeCsr(input))).not.toBe('ok')
    }
  })

  it('mutated valid objects only ever produce CaError, and never verify', async () => {
    const g = makeGenerators(prng(SEED + 1))
    const certDer = pemToDer(certPem)
    const crlDer = pemToDer(crlPem)
    const csrDer = pemToDer(csrPem)
    const codes = new Map<string, number>()
    const count = (code: string): void => { codes.set(code, (codes.get(code) ?? 0) + 1) }
    for (let i = 0; i < ROUNDS; i++) {
      const cert = derToPem(g.mutate(certDer), 'CERTIFICATE')
      await onlyCaErrors('parseNodeCertificate', cert, () => parseNodeCertificate(cert))
      const certResult = await onlyCaErrors('verifyNodeCertificate', cert, () => verifyNodeCertificate(cert, { caPem }))
      count(`cert:${certResult}`)

      const crl = derToPem(g.mutate(crlDer), 'X509 CRL')
      await onlyCaErrors('parseCrl', crl, () => parseCrl(crl))
      const crlResult = await onlyCaErrors('verifyCrl', crl, () => verifyCrl(crl, caPem))
      count(`crl:${crlResult}`)

      const csr = derToPem(g.mutate(csrDer), 'CERTIFICATE REQUEST')
      const csrResult = await onlyCaErrors('verifyNodeCsr', csr, async () => await verifyNodeCsr(csr))
      count(`csr:${csrResult}`)
    }
    // every byte of the envelope is either signed or strictly checked, so a
    // changed object must never verify successfully
    expect(codes.get('cert:ok') ?? 0).toBe(0)
    expect(codes.get('crl:ok') ?? 0).toBe(0)
    expect(codes.get('csr:ok') ?? 0).toBe(0)
  })
})
