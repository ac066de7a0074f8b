import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { DEVNET_MODEL_ID, serveDevnetModel, startDevnet, type DevnetNode } from '../../devnet/index.ts'
import { NodeStartError } from '../../devnet/index.ts'
import { EXIT } from '../errors.ts'
import { port, positiveInt } from '../options.ts'

export function registerDevnetCommand (program: Command): void {
  program.command('devnet')
    .description('run a local mesh: a throw-away dev CA and N nodes, each its own process (what `npm start` runs)')
    .option('--nodes <n>', 'number of nodes', positiveInt, 3)
    .option('--dir <dir>', 'keep CA and node data here (reused next time, never deleted); default: a temp dir removed on exit')
    .option('--base-port <port>', 'API port of node-1; the others count up (0 = any free port)', port, 7070)
    .option('--log-level <level>', 'log level of the nodes', 'warn')
    .action(async (options: { nodes: number, dir?: string, basePort: number, logLevel: string }) => {
      const owned = options.dir == null
      const dir = owned ? await mkdtemp(join(tmpdir(), 'bkg-devnet-')) : resolve(options.dir!)
      const started = performance.now()
      let nodes: DevnetNode[] = []
      const cleanup = async (): Promise<void> => {
        await Promise.all(nodes.map(async (node) => await node.process.stop()))
        if (owned) await rm(dir, { recursive: true, force: true })
      }
      try {
        nodes = await startDevnet({
          dir,
          nodes: options.nodes,
          basePort: options.basePort,
          logLevel: options.logLevel,
          onLog: (name, line) => process.stderr.write(`[${name}] ${line}\n`)
        })
      } catch (err) {
        await cleanup()
        // the node's own advice names `bkg start`'s flag; here the ports come from --base-port
        if (err instanceof NodeStartError && err.exitCode === EXIT.addressInUse && /API address/.test(err.message)) {
          throw new NodeStartError(`${err.message.replace(/: stop it, or choose another port with --api$/, '')}: stop it, or run \`bkg devnet --base-port PORT\` (0: any free ports)`, err.exitCode)
        }
        throw err
      }
      const [admitted, model] = await Promise.all([
        waitForMesh(nodes, 20_000),
        serveDevnetModel(dir, nodes[0].paths, nodes[0].process.started.api, nodes[0].token).then(() => null, (err: Error) => err)
      ])
      console.log(`BKG devnet: ${nodes.length} nodes in ${dir}${owned ? ' (removed on exit)' : ''}`)
      for (const node of nodes) {
        console.log(`  ${node.name}  ${node.process.started.api}  ${node.process.started.peerId}`)
      }
      console.log(`  admin token of each node: <dir>/node-N/api-token   e.g. ${join(nodes[0].paths.dir, 'api-token')}`)
      console.log(`  try: curl -H "Authorization: Bearer $(cat ${join(nodes[0].paths.dir, 'api-token')})" ${nodes[0].process.started.api}/api/v1/peers`)
      const tokenFile = join(nodes[0].paths.dir, 'api-token')
      console.log(model == null
        ? `  node-1 serves ${DEVNET_MODEL_ID} (the project's test model): curl -H "Authorization: Bearer $(cat ${tokenFile})" -H 'content-type: application/json' -d '{"model":"${DEVNET_MODEL_ID}","messages":[{"role":"user","content":"Hi"}],"max_tokens":20}' ${nodes[0].process.started.api}/v1/chat/completions`
        : `  warning: node-1 does not serve the test model: ${model.message}`)
      console.log(admitted
        ? `mesh ready in ${Math.round(performance.now() - started)} ms: every node admitted by node-1. Ctrl-C stops all.`
        : 'warning: not every node was admitted within 20 s; see the logs above. Ctrl-C stops all.')

      let stopping = false
      const stop = (): void => {
        if (stopping) return
        stopping = true
        console.log('stopping devnet…')
        cleanup().then(() => process.exit(0), (err: Error) => {
          console.error(`devnet shutdown failed: ${err.message}`)
          process.exit(1)
        })
      }
      process.on('SIGINT', stop)
      process.on('SIGTERM', stop)
      for (const node of nodes) {
        void node.process.exited.then((code) => {
          if (!stopping) console.error(`${node.name} exited unexpectedly (code ${code})`)
        })
      }
    })
}

async function waitForMesh (nodes: DevnetNode[], timeoutMs: number): Promise<boolean> {
  const [first] = nodes
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${first.process.started.api}/api/v1/peers?ping=false`, { headers: { authorization: `Bearer ${first.token}` } })
      if (response.ok && (await response.json() as unknown[]).length >= nodes.length - 1) return true
    } catch {} // not answering yet: asked again until the deadline, which reports the failure
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return false
}
