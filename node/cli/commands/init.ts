import { hostname } from 'node:os'
import type { Command } from 'commander'
import { dataDirPaths, defaultDataDir } from '../../identity/index.ts'
import { enrollNode } from '../../identity/index.ts'
import { CliError } from '../errors.ts'

export const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

export function registerInitCommand (program: Command): void {
  program.command('init')
    .description('create this node\'s identity (Ed25519 libp2p key) and a CSR for the operator to sign')
    .option('--data <dir>', 'node data directory', defaultDataDir())
    .option('--name <node>', 'node name for the certificate', hostname().split('.')[0] || 'node')
    .action(async (options: { data: string, name: string }) => {
      if (!NODE_NAME.test(options.name)) throw new CliError(`node name "${options.name}" is not valid: 1-64 characters of A-Z a-z 0-9 . _ -`, 2)
      const paths = dataDirPaths(options.data)
      const { peerId, created } = await enrollNode(paths, options.name)
      console.error(created ? `new identity in ${paths.dir}` : `kept the existing identity in ${paths.dir}; wrote a fresh CSR`)
      console.error(`CSR: ${paths.csr} — have the operator run: bkg ca sign --ca <ca dir> --csr ${paths.csr} --out ${paths.cert}`)
      console.error(`then copy the operator's ca.crt to ${paths.ca}`)
      console.log(peerId)
    })
}
