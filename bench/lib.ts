import { readFile } from 'node:fs/promises'

/** A target a metric is compared with: `value` must be below (`<`) or above (`>`) it. */
export interface Target {
  op: '<' | '>'
  value: number
}

/** One row of the table and one entry of the JSON report. */
export interface Metric {
  id: string
  name: string
  value: number | null
  unit: string
  target: Target | null
  /** null when there is no target (context rows) or no value */
  pass: boolean | null
  /** a short human summary for the table (spread, sample count, …) */
  note: string
  detail?: Record<string, unknown>
}

export function metric (init: Omit<Metric, 'pass' | 'note'> & { note?: string }): Metric {
  const { target } = init
  const value = init.value != null && Number.isFinite(init.value) ? round(init.value) : init.value
  let pass: boolean | null = null
  if (target != null && value != null && Number.isFinite(value)) {
    pass = target.op === '<' ? value < target.value : value > target.value
  } else if (target != null) {
    pass = false
  }
  return { ...init, value, note: init.note ?? '', pass }
}

/** A metric for a measurement that could not be taken at all (it still shows up as a MISS row). */
export function failedMetric (id: string, name: string, unit: string, target: Target | null, err: unknown): Metric {
  return metric({ id, name, value: null, unit, target, note: `error: ${errorText(err)}`.slice(0, 160), detail: { error: errorText(err) } })
}

export function errorText (err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0] : String(err)
}

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile (samples: number[], p: number): number {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]
}

export function median (samples: number[]): number {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

export interface Summary {
  n: number
  min: number
  p50: number
  p90: number
  p99: number
  max: number
  mean: number
}

export function summarize (samples: number[]): Summary {
  const n = samples.length
  return {
    n,
    min: n > 0 ? Math.min(...samples) : Number.NaN,
    p50: percentile(samples, 50),
    p90: percentile(samples, 90),
    p99: percentile(samples, 99),
    max: n > 0 ? Math.max(...samples) : Number.NaN,
    mean: n > 0 ? samples.reduce((a, b) => a + b, 0) / n : Number.NaN
  }
}

/** Rounds for display and JSON: 3 significant decimals below 10, fewer above. */
export function round (value: number, digits?: number): number {
  if (!Number.isFinite(value)) return value
  const d = digits ?? (Math.abs(value) < 1 ? 3 : Math.abs(value) < 10 ? 2 : Math.abs(value) < 100 ? 1 : 0)
  const f = 10 ** d
  return Math.round(value * f) / f
}

export function roundSummary (summary: Summary): Summary {
  return {
    n: summary.n,
    min: round(summary.min),
    p50: round(summary.p50),
    p90: round(summary.p90),
    p99: round(summary.p99),
    max: round(summary.max),
    mean: round(summary.mean)
  }
}

export function fmt (value: number | null | undefined, unit = ''): string {
  if (value == null || !Number.isFinite(value)) return 'n/a'
  return `${round(value)}${unit !== '' ? ` ${unit}` : ''}`
}

export const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `probe` every `intervalMs` until it returns a truthy value; rejects after `timeoutMs`. */
export async function pollUntil<T> (what: string, probe: () => Promise<T | undefined | false | null>, timeoutMs: number, intervalMs: number): Promise<T> {
  const deadline = performance.now() + timeoutMs
  let last: unknown
  while (performance.now() < deadline) {
    const round = performance.now()
    try {
      const value = await probe()
      if (value != null && value !== false) return value
    } catch (err) {
      last = err
    }
    const wait = intervalMs - (performance.now() - round)
    if (wait > 0) await sleep(wait)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last != null ? `: ${errorText(last)}` : ''}`)
}

/**
 * VmRSS (and VmHWM, the peak) of a process from /proc/<pid>/status, and its PSS (resident pages,
 * shared ones divided among the processes sharing them, e.g. the node binary) from
 * /proc/<pid>/smaps_rollup; MiB, Linux only.
 */
export async function processMemory (pid: number): Promise<{ rssMiB: number, peakMiB: number, pssMiB: number }> {
  const [status, rollup] = await Promise.all([
    readFile(`/proc/${pid}/status`, 'utf8'),
    readFile(`/proc/${pid}/smaps_rollup`, 'utf8')
  ])
  const kib = (text: string, field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)
    if (match == null) throw new Error(`no ${field} in /proc/${pid}`)
    return Number(match[1])
  }
  return { rssMiB: kib(status, 'VmRSS') / 1024, peakMiB: kib(status, 'VmHWM') / 1024, pssMiB: kib(rollup, 'Pss') / 1024 }
}

/** user+system CPU time of a process in milliseconds, from /proc/<pid>/stat. */
export async function processCpuMs (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // fields after the command name (which may contain spaces) start after the last ')'
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return ((utime + stime) * 1000) / 100 // USER_HZ is 100 on Linux
}

/** Renders rows as a plain-text table with aligned columns. */
export function formatTable (header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

export function metricsTable (metrics: Metric[]): string {
  const rows = metrics.map((m) => [
    m.name,
    fmt(m.value, m.unit),
    m.target == null ? '-' : `${m.target.op} ${m.target.value} ${m.unit}`,
    m.pass == null ? 'info' : m.pass ? 'PASS' : 'MISS',
    m.note
  ])
  return formatTable(['metric', 'value', 'target', 'result', 'detail'], rows)
}

/** Progress goes to stderr so stdout carries only the table. */
export function progress (message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${message}\n`)
}

/** Busy and total CPU time of the whole machine in ms, from the `cpu` line of /proc/stat. */
export async function machineCpuMs (): Promise<{ busy: number, total: number }> {
  const stat = await readFile('/proc/stat', 'utf8')
  const fields = stat.split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields
  const total = user + nice + system + idle + iowait + irq + softirq + steal
  return { busy: ((total - idle - iowait) * 1000) / 100, total: (total * 1000) / 100 }
}

/** CPU time of this process plus its children that have exited (and been reaped), in ms. */
export async function selfTreeCpuMs (): Promise<number> {
  const stat = await readFile('/proc/self/stat', 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * 1000) / 100
}
