import { createHash } from 'node:crypto'
import { z } from 'zod'
import { NAMESPACE_PATTERN } from '../ca/roles.ts'
import { canonicalJson } from './model-package.ts'

/**
 * Signed events. An origin node numbers its events 1, 2, 3… (`seq`, across all namespaces) and
 * links each to its previous event in the same namespace (`prevSeq`, 0 for the first): a node
 * that may see only some namespaces can still tell whether it holds a namespace's whole chain
 * from an origin, and ask a peer for the rest (`/bkg/events/sync`). The origin signs the canonical
 * JSON of everything but `id` and `sig` with its libp2p Ed25519 key, so any peer can pass an
 * event on and every receiver can check it; `id` is derived from the signed bytes.
 */
export const EVENT_SIGNATURE_CONTEXT = 'bkg-event/1\n'
export const MAX_EVENT_PAYLOAD_BYTES = 64 * 1024
export const EVENT_TYPE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/
/** `<wall clock ms, 15 digits>-<logical counter, 5 digits>`: sorts as text in time order */
export const HLC_PATTERN = /^\d{15}-\d{5}$/

export const EventNamespace = z.string().regex(NAMESPACE_PATTERN, 'namespace: 1-63 of a-z 0-9 . _ -, starting with a letter or digit')
export const EventType = z.string().regex(EVENT_TYPE_PATTERN, 'type: 1-128 of A-Z a-z 0-9 . _ : / -, starting with a letter or digit')
/**
 * Where a reader resumes: an event id, or a `localId` (the order events arrived at this node, a
 * PostgreSQL bigint kept within JavaScript's exact integers).
 */
export const EventCursor = z.string().max(64).regex(/^[A-Za-z0-9_-]+$/, 'a cursor is an event id or a local id')
  .refine((text) => !/^\d+$/.test(text) || Number(text) <= Number.MAX_SAFE_INTEGER, `a local id is at most ${Number.MAX_SAFE_INTEGER}`)
export const EventPayload = z.json().refine((value) => Buffer.byteLength(JSON.stringify(value)) <= MAX_EVENT_PAYLOAD_BYTES, `payload: at most ${MAX_EVENT_PAYLOAD_BYTES} bytes of JSON`)

const EventFields = z.object({
  v: z.literal(1),
  namespace: EventNamespace,
  type: EventType,
  payload: EventPayload,
  origin: z.string().min(40).max(64).regex(/^[1-9A-HJ-NP-Za-km-z]+$/),
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  prevSeq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  hlc: z.string().regex(HLC_PATTERN)
})
const linksBackwards = { message: 'prevSeq must be below seq', path: ['prevSeq'] }

export const UnsignedEvent = EventFields.strict().refine((event) => event.prevSeq < event.seq, linksBackwards)
export type UnsignedEvent = z.infer<typeof UnsignedEvent>

export const SignedEvent = EventFields.extend({
  id: z.string().regex(/^[A-Za-z0-9_-]{22}$/),
  /** base64 Ed25519 signature by `origin` over eventSigningBytes */
  sig: z.string().max(128)
}).strict().refine((event) => event.prevSeq < event.seq, linksBackwards)
export type SignedEvent = z.infer<typeof SignedEvent>

export function unsignedPart (event: SignedEvent | UnsignedEvent): UnsignedEvent {
  const { v, namespace, type, payload, origin, seq, prevSeq, hlc } = event
  return { v, namespace, type, payload, origin, seq, prevSeq, hlc }
}

export function eventSigningBytes (event: UnsignedEvent): Uint8Array {
  return new TextEncoder().encode(EVENT_SIGNATURE_CONTEXT + canonicalJson(unsignedPart(event), 'finite'))
}

/** 128 bits of the sha256 of the signed bytes, base64url */
export function eventId (signingBytes: Uint8Array): string {
  return createHash('sha256').update(signingBytes).digest().subarray(0, 16).toString('base64url')
}

export function formatHlc (wall: number, logical: number): string {
  return `${String(wall).padStart(15, '0')}-${String(logical).padStart(5, '0')}`
}

export function parseHlc (hlc: string): { wall: number, logical: number } {
  const [wall, logical] = hlc.split('-')
  return { wall: Number(wall), logical: Number(logical) }
}

/**
 * What travels on a namespace's gossip topic: the events of one publish, in seq order, packed into
 * as few messages as fit (a gossip message is signed and checked once, however many events it carries).
 */
/** the most events one catch-up answer may carry */
export const MAX_SYNC_PAGE = 1000

export const EventGossip = z.object({ v: z.literal(1), events: z.array(z.unknown()).min(1).max(1000) }).strict()
export type EventGossip = z.infer<typeof EventGossip>
/** a gossip message stays well under gossipsub's 1 MiB default limit */
export const MAX_EVENT_GOSSIP_BYTES = 512 * 1024

/** `/bkg/events/sync/1.0.0`: one request, one response, uvarint-length-prefixed JSON each. */
export const SyncRequest = z.discriminatedUnion('op', [
  /** the responder's chain heads for the namespaces both sides may see */
  z.object({ op: z.literal('heads') }).strict(),
  /** events of one origin in one namespace with seq > afterSeq, in seq order */
  z.object({
    op: z.literal('range'),
    origin: z.string().min(40).max(64),
    namespace: EventNamespace,
    afterSeq: z.number().int().min(0),
    limit: z.number().int().min(1).max(MAX_SYNC_PAGE)
  }).strict()
])
export type SyncRequest = z.infer<typeof SyncRequest>

export const SyncHead = z.object({ origin: z.string().max(64), namespace: EventNamespace, seq: z.number().int().min(0) }).strict()
export type SyncHead = z.infer<typeof SyncHead>

export const SyncResponse = z.union([
  z.object({ heads: z.array(SyncHead).max(100_000) }).strict(),
  /** `certs`: the certificates of the events' origins, so a requester can check events of nodes it never met */
  z.object({ events: z.array(z.unknown()).max(MAX_SYNC_PAGE), certs: z.record(z.string(), z.string().max(8192)) }).strict(),
  z.object({ error: z.string().max(256) }).strict()
])
export type SyncResponse = z.infer<typeof SyncResponse>

export const MAX_SYNC_MESSAGE_BYTES = 16 * 1024 * 1024
