import { z } from 'zod'

/** `/bkg/manifests/1.0.0`: one request, one response, both uvarint-length-prefixed JSON. */
export const ManifestRequest = z.object({
  name: z.string().max(64),
  /** omitted: the newest version the peer holds */
  version: z.string().max(64).optional()
}).strict()
export type ManifestRequest = z.infer<typeof ManifestRequest>

/** `envelope` is checked by the requester with the package verification, never trusted as is. */
export const ManifestResponse = z.union([
  z.object({ envelope: z.unknown() }).strict(),
  z.object({ error: z.string().max(256) }).strict()
])
export type ManifestResponse = z.infer<typeof ManifestResponse>

export const MAX_MANIFEST_MESSAGE_BYTES = 1024 * 1024 + 1024
