import { z } from 'zod'

/** On-disk list of peers a node last saw, used to rejoin after a restart. */
export const PeerCache = z.object({
  version: z.literal(1),
  peers: z.array(z.object({ peerId: z.string(), addrs: z.array(z.string()).max(32) })).max(1024)
})
export type PeerCache = z.infer<typeof PeerCache>
