import { peerIdsOf, type TestMesh, type TestNode } from '../test/helpers/mesh.ts'
import { errorText, failedMetric, fmt, median, metric, pollUntil, progress, round, type Metric } from './lib.ts'

const TARGET_MS = 1500

interface Run {
  /** spawn → the node's `started` stdout line (process start, libp2p + API up) */
  startedMs: number
  /** spawn → the bootstrap node's `/api/v1/peers?ping=false` lists the new node */
  admittedMs: number
}

/**
 * Issue target: a new node is admitted by the mesh within 1.5 s of `bkg start`.
 *
 * Each run provisions a fresh node (identity + certificate, outside the timed part), spawns
 * `bkg start --bootstrap <bootstrap>` and polls the bootstrap node's peer list every `pollMs`
 * from the moment of spawning. The node is stopped after each run.
 */
export interface StartToAdmittedOptions {
  runs?: number
  pollMs?: number
  /** metric id prefix and table label; the issue target applies only when `withTarget` */
  id?: string
  label?: string
  withTarget?: boolean
  /** node names are `<namePrefix>-<i>` */
  namePrefix?: string
}

export async function measureStartToAdmitted (mesh: TestMesh, bootstrap: TestNode, options: StartToAdmittedOptions = {}): Promise<Metric[]> {
  const { runs = 5, pollMs = 15, id = 'start_to_admitted', label = 'start→admitted', withTarget = true, namePrefix = 'fresh' } = options
  const target = withTarget ? { op: '<' as const, value: TARGET_MS } : null
  const results: Run[] = []
  const errors: string[] = []
  const fresh: TestNode[] = []
  for (let i = 1; i <= runs; i++) {
    fresh.push(await mesh.addNode(`${namePrefix}-${i}`, { roles: ['member'], args: ['--bootstrap', bootstrap.addrs[0]] }))
  }
  for (const node of fresh) {
    try {
      const t0 = performance.now()
      let startedAt = Number.NaN
      const admitted = pollUntil(`${node.name} admitted by ${bootstrap.name}`, async () => (await peerIdsOf(bootstrap)).includes(node.peerId), 20_000, pollMs)
        .then(() => performance.now())
      const started = node.start().then(() => { startedAt = performance.now() })
      const [admittedAt] = await Promise.all([admitted, started])
      const run = { startedMs: startedAt - t0, admittedMs: admittedAt - t0 }
      results.push(run)
      progress(`${label} ${node.name}: started ${Math.round(run.startedMs)} ms, admitted ${Math.round(run.admittedMs)} ms`)
    } catch (err) {
      errors.push(errorText(err))
      progress(`${label} ${node.name} failed: ${errorText(err)}`)
    } finally {
      await node.stop()
    }
  }
  if (results.length === 0) {
    return [
      failedMetric(`${id}_ms`, `${label} (median)`, 'ms', target, errors[0]),
      failedMetric(`${id}_started_line_ms`, '  of which process start (median)', 'ms', null, errors[0])
    ]
  }
  const admitted = results.map((r) => r.admittedMs)
  const started = results.map((r) => r.startedMs)
  const afterStarted = results.map((r) => r.admittedMs - r.startedMs)
  const runsDetail = results.map((r) => ({ startedMs: round(r.startedMs), admittedMs: round(r.admittedMs) }))
  return [
    metric({
      id: `${id}_ms`,
      name: `${label} (median)`,
      value: round(median(admitted)),
      unit: 'ms',
      target,
      note: `min ${fmt(Math.min(...admitted))} / max ${fmt(Math.max(...admitted))} ms, n=${results.length}${errors.length > 0 ? `, ${errors.length} failed` : ''}`,
      detail: { runs: runsDetail, min: round(Math.min(...admitted)), max: round(Math.max(...admitted)), pollMs, errors }
    }),
    metric({
      id: `${id}_started_line_ms`,
      name: '  of which process start (median)',
      value: round(median(started)),
      unit: 'ms',
      target: null,
      note: `spawn → "started" line; min ${fmt(Math.min(...started))} / max ${fmt(Math.max(...started))} ms; then +${fmt(median(afterStarted))} ms to admission`,
      detail: { min: round(Math.min(...started)), max: round(Math.max(...started)), startedToAdmittedMedianMs: round(median(afterStarted)) }
    })
  ]
}
