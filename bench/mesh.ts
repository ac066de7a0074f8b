import { peerIdsOf, TestMesh, type TestNode } from '../test/helpers/mesh.ts'
import { pollUntil, progress, sleep } from './lib.ts'

export interface BenchMesh {
  mesh: TestMesh
  nodes: TestNode[]
  bootstrap: TestNode
  /** ms from spawning the first follower to every node admitted by node-1 */
  formedMs: number
}

/**
 * `size` real `bkg start` processes on 127.0.0.1: node-1 (bootstrap, relay, admin) first, then the
 * others in parallel with `--bootstrap <node-1>`; resolves once node-1 has admitted every one and
 * the DHT routing tables had `settleMs` to fill.
 */
export async function startBenchMesh (root: string, size: number, settleMs: number): Promise<BenchMesh> {
  const mesh = await TestMesh.create(root, 'Bench Operator')
  try {
    const bootstrap = await mesh.addNode('node-1', { roles: ['bootstrap', 'relay', 'admin', 'member'] })
    await bootstrap.start()
    const rest: TestNode[] = []
    for (let i = 2; i <= size; i++) {
      rest.push(await mesh.addNode(`node-${i}`, { roles: ['member'], args: ['--bootstrap', bootstrap.addrs[0]] }))
    }
    const started = performance.now()
    await Promise.all(rest.map(async (node) => await node.start()))
    await pollUntil(`all ${size - 1} nodes admitted by node-1`, async () => (await peerIdsOf(bootstrap)).length >= size - 1, 60_000, 100)
    const formedMs = performance.now() - started
    progress(`${size}-node mesh formed in ${Math.round(formedMs)} ms; settling ${settleMs} ms`)
    await sleep(settleMs)
    return { mesh, nodes: [bootstrap, ...rest], bootstrap, formedMs }
  } catch (err) {
    await mesh.stopAll().catch(() => {})
    throw err
  }
}
