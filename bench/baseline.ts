import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import type { TestNode } from '../test/helpers/mesh.ts'
import { failedMetric, fmt, metric, progress, roundSummary, summarize, type Metric } from './lib.ts'

/** An echo server in its own process, on the same Node binary as the nodes. */
const ECHO_SERVER = `
const net = require('node:net')
const server = net.createServer((socket) => { socket.setNoDelay(true); socket.pipe(socket) })
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'))
process.on('SIGTERM', () => process.exit(0))
`

async function roundTrip (socket: Socket, payload: Buffer): Promise<number> {
  const t0 = performance.now()
  let got = 0
  const done = new Promise<void>((resolve) => {
    const onData = (chunk: Buffer): void => {
      got += chunk.length
      if (got >= payload.length) {
        socket.off('data', onData)
        resolve()
      }
    }
    socket.on('data', onData)
  })
  socket.write(payload)
  await done
  return performance.now() - t0
}

/**
 * Context for the noisy machine: a 64-byte TCP round trip between this process and an echo
 * server in another process. A slow figure here means the whole run was slow.
 */
export async function measureTcpBaseline (count = 500): Promise<Metric[]> {
  const child = spawn(process.execPath, ['-e', ECHO_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const [line] = await once(createInterface({ input: child.stdout }), 'line') as [string]
    const socket = connect({ host: '127.0.0.1', port: Number(line), noDelay: true })
    await once(socket, 'connect')
    const payload = Buffer.alloc(64, 7)
    for (let i = 0; i < 50; i++) await roundTrip(socket, payload) // warm-up
    const samples: number[] = []
    for (let i = 0; i < count; i++) samples.push(await roundTrip(socket, payload))
    socket.destroy()
    const s = summarize(samples)
    return [metric({
      id: 'baseline_tcp_rtt_ms',
      name: 'baseline: TCP RTT, 2 processes (p50)',
      value: s.p50,
      unit: 'ms',
      target: null,
      note: `64 B echo; p99 ${fmt(s.p99)} / max ${fmt(s.max)} ms, n=${s.n}`,
      detail: { ...roundSummary(s) }
    })]
  } catch (err) {
    return [failedMetric('baseline_tcp_rtt_ms', 'baseline: TCP RTT, 2 processes (p50)', 'ms', null, err)]
  } finally {
    if (child.exitCode == null && child.signalCode == null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
    }
  }
}

/**
 * Context from inside the mesh: the HTTP API's own round trip (`GET /api/v1/health`, no auth,
 * no p2p work) and libp2p ping RTT between admitted peers (`GET /api/v1/peers` pings each).
 */
export async function measureMeshBaseline (nodes: TestNode[], count = 100): Promise<Metric[]> {
  const metrics: Metric[] = []
  try {
    const samples: number[] = []
    for (let i = 0; i < count; i++) {
      const node = nodes[i % nodes.length]
      const t0 = performance.now()
      const res = await fetch(`${node.url}/api/v1/health`)
      await res.text()
      samples.push(performance.now() - t0)
    }
    const s = summarize(samples)
    metrics.push(metric({
      id: 'baseline_http_health_ms',
      name: 'baseline: node API HTTP round trip (p50)',
      value: s.p50,
      unit: 'ms',
      target: null,
      note: `GET /api/v1/health; p99 ${fmt(s.p99)} ms, n=${s.n}`,
      detail: { ...roundSummary(s) }
    }))
  } catch (err) {
    metrics.push(failedMetric('baseline_http_health_ms', 'baseline: node API HTTP round trip (p50)', 'ms', null, err))
  }
  try {
    const pings: number[] = []
    for (const node of nodes) {
      const { body } = await node.api<Array<{ latencyMs: number | null }>>('GET', '/api/v1/peers?ping=true')
      for (const peer of body) if (peer.latencyMs != null) pings.push(peer.latencyMs)
    }
    const s = summarize(pings)
    metrics.push(metric({
      id: 'baseline_libp2p_ping_ms',
      name: 'baseline: libp2p ping between nodes (p50)',
      value: s.p50,
      unit: 'ms',
      target: null,
      note: `latencyMs of GET /api/v1/peers on every node; p99 ${fmt(s.p99)} ms, n=${s.n}`,
      detail: { ...roundSummary(s) }
    }))
  } catch (err) {
    metrics.push(failedMetric('baseline_libp2p_ping_ms', 'baseline: libp2p ping between nodes (p50)', 'ms', null, err))
  }
  progress('mesh baselines done')
  return metrics
}
