import type { Command } from 'commander'
import { defaultDataDir } from '../../identity/index.ts'
import { callNode, resolveTarget } from '../node-client.ts'
import { readInput } from '../options.ts'

export function registerCrlCommands (program: Command): void {
  const crl = program.command('crl').description('certificate revocation lists')
  crl.command('publish')
    .description('hand a CA-signed CRL to a running admin node, which drops revoked peers and spreads it mesh-wide')
    .argument('<file>', 'CRL (PEM) from `bkg ca crl`')
    .option('--data <dir>', 'data directory of the running admin node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of --data')
    .option('--token <token>', 'admin token for --api')
    .action(async (file: string, options: { data: string, api?: string, token?: string }) => {
      const pem = await readInput(file, 'CRL')
      const target = await resolveTarget(options, defaultDataDir())
      const result = await callNode<{ number: string, revoked: number, dropped: string[], recipients: number }>(target, 'POST', '/api/v1/admin/crl', { pem })
      console.log(`CRL ${result.number} adopted: ${result.revoked} revoked certificate(s), dropped ${result.dropped.length} connected peer(s), sent to ${result.recipients} peer(s)`)
    })
}
