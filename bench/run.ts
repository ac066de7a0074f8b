// `npm run bench`: real `bkg start` processes on 127.0.0.1, measured against the issue targets.
// Prints a table on stdout (progress on stderr) and writes bench/results/<timestamp>.json and
// bench/results/latest.json. A missed target is reported, never a non-zero exit; the exit code is
// non-zero only when the bench itself breaks.
import { mkdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tempDir, TestMesh } from '../test/helpers/mesh.ts'
import { measureMeshBaseline, measureTcpBaseline } from './baseline.ts'
import { measureDhtFindPeer } from './dht-find-peer.ts'
import { measureEvents } from './events.ts'
import { measureGossipLatency } from './gossip-latency.ts'
import { measureIdleRss } from './idle-rss.ts'
import { measureLlm } from './llm.ts'
import { measureModelPull } from './model-pull.ts'
import { measureSandboxes } from './sandboxes.ts'
import { failedMetric, machineCpuMs, metric, metricsTable, progress, round, selfTreeCpuMs, type Metric } from './lib.ts'
import { startBenchMesh, type BenchMesh } from './mesh.ts'
import { measureStartToAdmitted } from './start-to-admitted.ts'

const MESH_SIZE = 10
const SETTLE_MS = 2000
/** the issue measures a 256 MiB package; BKG_BENCH_PULL_MIB shrinks it for a quick look */
const PULL_MIB = Number(process.env.BKG_BENCH_PULL_MIB ?? 256)
const HARD_LIMIT_MS = 15 * 60_000

const resultsDir = fileURLToPath(new URL('./results/', import.meta.url))

async function main (): Promise<void> {
  const begun = performance.now()
  const timestamp = new Date().toISOString()
  const loadBefore = os.loadavg()
  const machineBefore = await machineCpuMs()
  const selfBefore = await selfTreeCpuMs()
  const tmp = await tempDir('bkg-bench-')
  let bench: BenchMesh | undefined
  let joinMesh: TestMesh | undefined
  const cleanup = async (): Promise<void> => {
    await joinMesh?.stopAll().catch(() => {})
    await bench?.mesh.stopAll().catch(() => {})
    await tmp.remove().catch(() => {})
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      progress(`${signal}: stopping nodes`)
      void cleanup().finally(() => process.exit(130))
    })
  }
  const watchdog = setTimeout(() => {
    progress(`still running after ${HARD_LIMIT_MS / 1000} s: giving up`)
    void cleanup().finally(() => process.exit(2))
  }, HARD_LIMIT_MS)
  watchdog.unref()

  const rows = {
    start: [] as Metric[],
    dht: [] as Metric[],
    gossip: [] as Metric[],
    rss: [] as Metric[],
    models: [] as Metric[],
    events: [] as Metric[],
    sandboxes: [] as Metric[],
    llm: [] as Metric[],
    context: [] as Metric[]
  }
  try {
    // measured before any node runs, so it shows how fast this machine is right now
    progress('baseline: TCP round trip')
    rows.context.push(...await measureTcpBaseline())

    // a lone bootstrap node and fresh nodes joining it one at a time, before the big mesh exists
    // (so its load does not count, and the stopped fresh nodes leave no stale DHT entries in it)
    progress('start → admitted: 5 fresh nodes joining a lone bootstrap node')
    try {
      joinMesh = await TestMesh.create(join(tmp.dir, 'join'), 'Bench Join Operator')
      const joinBootstrap = await joinMesh.addNode('join-bootstrap', { roles: ['bootstrap', 'relay', 'admin', 'member'] })
      await joinBootstrap.start()
      rows.start.push(...await measureStartToAdmitted(joinMesh, joinBootstrap, { runs: 5, pollMs: 15 }))
    } catch (err) {
      rows.start.push(failedMetric('start_to_admitted_ms', 'start→admitted (median)', 'ms', { op: '<', value: 1500 }, err))
    } finally {
      await joinMesh?.stopAll().catch(() => {})
      joinMesh = undefined
    }

    progress(`starting a ${MESH_SIZE}-node mesh`)
    try {
      bench = await startBenchMesh(tmp.dir, MESH_SIZE, SETTLE_MS)
      rows.context.push(metric({
        id: 'mesh_formed_ms',
        name: `${MESH_SIZE - 1} nodes spawned at once → all admitted`,
        value: round(bench.formedMs),
        unit: 'ms',
        target: null,
        note: `${MESH_SIZE - 1} processes starting together on ${os.cpus().length} cores`
      }))
    } catch (err) {
      progress(`mesh failed: ${String(err)}`)
      rows.dht.push(failedMetric('dht_find_peer_p50_ms', 'DHT findPeer p50 (10 nodes)', 'ms', { op: '<', value: 100 }, err))
      rows.gossip.push(failedMetric('gossip_latency_p99_ms', 'gossip delivery p99 (10 nodes)', 'ms', { op: '<', value: 50 }, err))
      rows.rss.push(failedMetric('idle_rss_mib', 'idle node RSS (median)', 'MiB', { op: '<', value: round(150e6 / 2 ** 20) }, err))
    }

    if (bench != null) {
      progress('idle RSS (5 s idle, nothing asked of the mesh yet)')
      rows.rss.push(...await measureIdleRss(bench.nodes, 5000))
      progress('DHT findPeer lookups')
      rows.dht.push(...await measureDhtFindPeer(bench.nodes, 50))
      progress('gossip latency')
      rows.gossip.push(...await measureGossipLatency(bench.nodes, 100, 100, 2000))
      progress('gossip under load (50 msg/s)')
      rows.gossip.push(...await measureGossipLatency(bench.nodes, 100, 20, 1000, true))
      progress('idle RSS after the lookup and gossip load (5 s idle)')
      rows.rss.push(...await measureIdleRss(bench.nodes, 5000, true))
      progress('mesh baselines')
      rows.context.push(...await measureMeshBaseline(bench.nodes))
      // context: the same join into the running (idle) 10-node mesh; last, so the stopped fresh
      // nodes leave no stale DHT entries behind for the other measurements
      progress(`start → admitted: 3 fresh nodes joining the ${MESH_SIZE}-node mesh via node-1`)
      rows.start.push(...await measureStartToAdmitted(bench.mesh, bench.bootstrap, {
        runs: 3,
        pollMs: 15,
        id: 'start_to_admitted_busy_mesh',
        label: `  start→admitted into the ${MESH_SIZE}-node mesh`,
        withTarget: false,
        namePrefix: 'joiner'
      }))
    }
    // model transfer runs on its own 5-node mesh, after the 10-node mesh is gone
    progress('stopping the 10-node mesh before the model pull')
    await bench?.mesh.stopAll().catch(() => {})
    rows.models.push(...await measureModelPull(tmp.dir, PULL_MIB))
    // events, realtime and central sync on their own 2-node mesh, one in-process PGlite and a PostgreSQL server
    rows.events.push(...await measureEvents(tmp.dir))
    // sandboxes: the runtime and service in this process, then one node for its RSS and the HTTP paths
    rows.sandboxes.push(...await measureSandboxes(tmp.dir))
    // inference: two nodes and the test model, against node-llama-cpp called in this process (`node bench/llm.ts` runs these alone)
    rows.llm.push(...await measureLlm(tmp.dir))
  } finally {
    progress('stopping nodes')
    await cleanup()
    clearTimeout(watchdog)
  }

  const durationMs = performance.now() - begun
  const cpus = os.cpus()
  // the machine is shared: CPU the rest of the machine used while we ran makes every figure noisier
  const machineAfter = await machineCpuMs()
  const ours = (await selfTreeCpuMs()) - selfBefore
  const capacity = machineAfter.total - machineBefore.total
  const busy = machineAfter.busy - machineBefore.busy
  const foreignPercent = capacity > 0 ? (100 * Math.max(0, busy - ours)) / capacity : Number.NaN
  rows.context.push(metric({
    id: 'machine_foreign_cpu_percent',
    name: 'machine CPU used by other processes',
    value: round(foreignPercent),
    unit: '%',
    target: null,
    note: `of all ${cpus.length} cores during the run; bench+nodes used ${round((100 * ours) / capacity)} %; load avg before ${round(loadBefore[0], 2)}`,
    detail: { machineBusyPercent: round((100 * busy) / capacity), benchTreePercent: round((100 * ours) / capacity), loadavgBefore: loadBefore.map((l) => round(l, 2)) }
  }))
  const metrics = [...rows.start, ...rows.dht, ...rows.gossip, ...rows.rss, ...rows.models, ...rows.events, ...rows.sandboxes, ...rows.llm, ...rows.context]
  const report = {
    timestamp,
    durationMs: round(durationMs),
    machine: {
      cpus: cpus.length,
      model: cpus[0]?.model ?? 'unknown',
      totalmemBytes: os.totalmem(),
      totalmemMiB: Math.round(os.totalmem() / 2 ** 20),
      node: process.version,
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      loadavgBefore: loadBefore.map((l) => round(l, 2)),
      loadavgAfter: os.loadavg().map((l) => round(l, 2))
    },
    config: { meshSize: MESH_SIZE, settleMs: SETTLE_MS, pullMiB: PULL_MIB },
    metrics
  }

  await mkdir(resultsDir, { recursive: true })
  const file = join(resultsDir, `${timestamp.replace(/[:.]/g, '-')}.json`)
  const json = JSON.stringify(report, null, 2) + '\n'
  await writeFile(file, json)
  await writeFile(join(resultsDir, 'latest.json'), json)

  const passed = metrics.filter((m) => m.pass === true).length
  const targeted = metrics.filter((m) => m.pass != null).length
  process.stdout.write(`BKG bench ${timestamp} · ${cpus.length}× ${report.machine.model} · ${report.machine.totalmemMiB} MiB · Node ${process.version}\n\n`)
  process.stdout.write(metricsTable(metrics) + '\n\n')
  if (foreignPercent > 10) process.stdout.write(`note: other processes used ${round(foreignPercent)} % of the machine during the run; figures are noisier than usual\n`)
  process.stdout.write(`${passed}/${targeted} targets met · ${round(durationMs / 1000)} s · ${file}\n`)
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
