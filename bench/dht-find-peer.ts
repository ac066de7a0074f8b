import { peerIdsOf, type TestNode } from '../test/helpers/mesh.ts'
import { errorText, failedMetric, fmt, metric, progress, roundSummary, summarize, type Metric } from './lib.ts'

const TARGET_P50_MS = 100

interface Lookup {
  from: string
  target: string
  /** elapsedMs the node reports: the DHT query alone */
  serverMs: number
  /** the HTTP round trip as the bench sees it */
  clientMs: number
  answeredBy: string
  /** whether `from` already had a connection to `target` before the lookup */
  wasConnected: boolean
}

/** Deterministic shuffle (mulberry32) so every run asks the same pairs in the same order. */
function shuffled<T> (items: T[], seed: number): T[] {
  let state = seed >>> 0
  const random = (): number => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

/**
 * Issue target: DHT findPeer p50 < 100 ms in a 10-node mesh.
 *
 * `GET /api/v1/peers/:peerId/lookup` runs kad-dht `findPeer(id, { useCache: false })`, so each
 * lookup is a network query even when the asker knows the target. Lookups run one at a time over
 * a fixed, shuffled set of (asker, target) pairs.
 */
export async function measureDhtFindPeer (nodes: TestNode[], count = 50): Promise<Metric[]> {
  const pairs: Array<[TestNode, TestNode]> = []
  for (const from of nodes) for (const target of nodes) if (from !== target) pairs.push([from, target])
  const plan = shuffled(pairs, 0xb1c).slice(0, count)

  const lookups: Lookup[] = []
  const errors: string[] = []
  for (const [from, target] of plan) {
    try {
      const wasConnected = (await peerIdsOf(from)).includes(target.peerId)
      const t0 = performance.now()
      const { status, body } = await from.api('GET', `/api/v1/peers/${target.peerId}/lookup`)
      const clientMs = performance.now() - t0
      if (status !== 200) throw new Error(`${from.name} → ${target.name}: HTTP ${status} ${JSON.stringify(body).slice(0, 200)}`)
      lookups.push({ from: from.name, target: target.name, serverMs: body.elapsedMs, clientMs, answeredBy: body.answeredBy, wasConnected })
    } catch (err) {
      errors.push(errorText(err))
    }
  }
  progress(`DHT lookups: ${lookups.length} ok, ${errors.length} failed`)
  if (lookups.length === 0) {
    return [failedMetric('dht_find_peer_p50_ms', 'DHT findPeer p50 (10 nodes)', 'ms', { op: '<', value: TARGET_P50_MS }, errors[0] ?? 'no lookups')]
  }

  const server = summarize(lookups.map((l) => l.serverMs))
  const client = summarize(lookups.map((l) => l.clientMs))
  const connected = lookups.filter((l) => l.wasConnected)
  const answeredByTarget = lookups.filter((l) => l.answeredBy === nodes.find((n) => n.name === l.target)?.peerId).length
  const failNote = errors.length > 0 ? `, ${errors.length} failed` : ''
  return [
    metric({
      id: 'dht_find_peer_p50_ms',
      name: 'DHT findPeer p50 (10 nodes)',
      value: server.p50,
      unit: 'ms',
      target: { op: '<', value: TARGET_P50_MS },
      note: `server elapsedMs; p90 ${fmt(server.p90)} / p99 ${fmt(server.p99)} / max ${fmt(server.max)} ms, n=${server.n}${failNote}`,
      detail: {
        server: roundSummary(server),
        client: roundSummary(client),
        failed: errors.length,
        errors: errors.slice(0, 5),
        alreadyConnected: connected.length,
        answeredByTarget,
        lookups
      }
    }),
    metric({
      id: 'dht_find_peer_p99_ms',
      name: '  DHT findPeer p99',
      value: server.p99,
      unit: 'ms',
      target: null,
      note: `p90 ${fmt(server.p90)} ms; ${connected.length}/${lookups.length} askers already connected to the target`
    }),
    metric({
      id: 'dht_find_peer_client_p50_ms',
      name: '  DHT lookup HTTP round trip p50',
      value: client.p50,
      unit: 'ms',
      target: null,
      note: `client side incl. HTTP; p90 ${fmt(client.p90)} / p99 ${fmt(client.p99)} ms`
    })
  ]
}
