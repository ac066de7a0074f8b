import { z } from 'zod'
import { ADMISSION_PROTOCOL } from './ids.ts'
import { parseUntrustedJson } from './untrusted-json.ts'
import { BkgError } from '../lib/bkg-error.ts'

/**
 * Admission wire format: after the Noise handshake each side sends one `hello` frame, checks the
 * other's, then sends one `verdict` frame. Frames are uvarint-length-prefixed UTF-8 JSON.
 * The verdict lets a refused peer log why it was refused instead of seeing a bare reset.
 */
export const MAX_ADMISSION_FRAME_BYTES = 512 * 1024
const MAX_CERT_PEM_CHARS = 16 * 1024
const MAX_CRL_PEM_CHARS = 480 * 1024

export const AdmissionHello = z.object({
  protocol: z.literal(ADMISSION_PROTOCOL),
  cert: z.string().min(1).max(MAX_CERT_PEM_CHARS),
  /** the sender's newest CA-signed CRL, so a node that missed a revocation learns it on connect */
  crl: z.string().max(MAX_CRL_PEM_CHARS).optional()
}).strict()
export type AdmissionHello = z.infer<typeof AdmissionHello>

export const AdmissionVerdict = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true) }).strict(),
  z.object({ ok: z.literal(false), code: z.string().max(64), message: z.string().max(1024) }).strict()
])
export type AdmissionVerdict = z.infer<typeof AdmissionVerdict>

export class AdmissionFrameError extends BkgError {
  constructor (message: string) {
    super('admission_frame_malformed', 400, message)
  }
}

export function encodeFrame (value: AdmissionHello | AdmissionVerdict): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value))
}

export function decodeHello (bytes: Uint8Array): AdmissionHello {
  return decode(AdmissionHello, bytes)
}

export function decodeVerdict (bytes: Uint8Array): AdmissionVerdict {
  return decode(AdmissionVerdict, bytes)
}

function decode<T> (schema: z.ZodType<T>, bytes: Uint8Array): T {
  let json: unknown
  try {
    json = parseUntrustedJson(bytes)
  } catch (err) {
    throw new AdmissionFrameError(`admission frame: ${(err as Error).message}`)
  }
  const parsed = schema.safeParse(json)
  if (!parsed.success) {
    throw new AdmissionFrameError(`admission frame is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
  }
  return parsed.data
}
