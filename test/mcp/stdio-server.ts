/**
 * `bkg mcp` in miniature for test/mcp/stdio.test.ts: serveMcpStdio over this process's stdio with
 * the fake services, acting as the node admin. Run with the project's node (process.execPath).
 */
import { serveMcpStdio } from '../../node/mcp/index.ts'
import { fakeServices } from './fakes.ts'

const services = fakeServices()
services.sandboxes.events.on('aborted', (id, reason) => { process.stderr.write(`ABORTED ${id} ${String(reason)}\n`) })
const handle = serveMcpStdio(services, { kind: 'node-admin', role: 'admin', namespace: '*', tokenId: 'node-admin', expiresAt: null }, {
  onEnd: () => { process.stderr.write('END\n') }
})
process.once('SIGTERM', () => { void handle.close().then(() => process.exit(0)) })
process.stderr.write(`READY ${process.pid}\n`)
