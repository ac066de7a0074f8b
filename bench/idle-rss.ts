import type { TestNode } from '../test/helpers/mesh.ts'
import { failedMetric, fmt, median, metric, processCpuMs, processMemory, progress, round, sleep, type Metric } from './lib.ts'

/** the issue says 150 MB: 150 × 10^6 bytes */
const TARGET_MIB = round(150e6 / 2 ** 20)

/**
 * Issue target: an idle node stays under 150 MB (143 MiB) RSS.
 *
 * Lets the mesh sit idle for `idleMs`, then reads VmRSS of every node process from
 * /proc/<pid>/status. The CPU the nodes burn while idle (utime+stime over the same window) is
 * reported as context: it is background load on the other measurements.
 */
export async function measureIdleRss (nodes: TestNode[], idleMs = 5000, afterLoad = false): Promise<Metric[]> {
  // the target row is an idle node (mesh formed, nothing asked of it); the same reading after the
  // lookup and gossip load is context: V8 keeps the heap it grew
  const suffix = afterLoad ? ' after load' : ''
  const idSuffix = afterLoad ? '_after_load' : ''
  const target = afterLoad ? null : { op: '<' as const, value: TARGET_MIB }
  try {
    const pids = nodes.map((node) => {
      const pid = node.proc?.child.pid
      if (pid == null) throw new Error(`${node.name} is not running`)
      return pid
    })
    const cpuBefore = await Promise.all(pids.map(processCpuMs))
    const t0 = performance.now()
    await sleep(idleMs)
    const windowMs = performance.now() - t0
    const cpuAfter = await Promise.all(pids.map(processCpuMs))
    const memory = await Promise.all(pids.map(processMemory))
    const rss = memory.map((m) => m.rssMiB)
    const pss = memory.map((m) => m.pssMiB)
    const cpuPercent = cpuAfter.map((after, i) => (100 * (after - cpuBefore[i])) / windowMs)
    progress(`idle RSS: ${rss.map((r) => Math.round(r)).join(', ')} MiB`)
    const perNode = Object.fromEntries(nodes.map((node, i) => [node.name, {
      rssMiB: round(rss[i]),
      peakRssMiB: round(memory[i].peakMiB),
      pssMiB: round(pss[i]),
      idleCpuPercent: round(cpuPercent[i])
    }]))
    return [
      metric({
        id: `idle_rss_mib${idSuffix}`,
        name: afterLoad ? '  idle node RSS after load (median)' : 'idle node RSS (median)',
        value: round(median(rss)),
        unit: 'MiB',
        target,
        note: `max ${fmt(Math.max(...rss))} MiB, peak (VmHWM) max ${fmt(Math.max(...memory.map((m) => m.peakMiB)))} MiB, n=${rss.length}`,
        detail: { idleMs: round(windowMs), max: round(Math.max(...rss)), perNode }
      }),
      metric({
        id: `idle_rss_max_mib${idSuffix}`,
        name: `  idle node RSS${suffix} (max)`,
        value: round(Math.max(...rss)),
        unit: 'MiB',
        target,
        note: ''
      }),
      metric({
        id: `idle_pss_mib${idSuffix}`,
        name: `  idle node PSS${suffix} (median)`,
        value: round(median(pss)),
        unit: 'MiB',
        target: null,
        note: 'RSS with shared pages (node binary, libraries) split among the node processes'
      }),
      metric({
        id: `idle_cpu_percent${idSuffix}`,
        name: `  idle node CPU${suffix} (median)`,
        value: round(median(cpuPercent)),
        unit: '%',
        target: null,
        note: `of one core over ${fmt(windowMs / 1000)} s idle; max ${fmt(Math.max(...cpuPercent))} %, all nodes together ${fmt(cpuPercent.reduce((a, b) => a + b, 0))} %`
      })
    ]
  } catch (err) {
    return [failedMetric('idle_rss_mib', 'idle node RSS (median)', 'MiB', { op: '<', value: TARGET_MIB }, err)]
  }
}
