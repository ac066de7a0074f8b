import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { initCa, signNodeCsr, type Passphrase, type Role } from '../../ca/index.ts'
import { exists } from '../../lib/fs.ts'
import { dataDirPaths, type DataDirPaths } from '../identity/index.ts'
import { enrollNode } from '../identity/index.ts'
import { NodeStartError, spawnNode, type NodeProcess } from './node-process.ts'

export interface DevnetOptions {
  dir: string
  nodes: number
  /** API of node i listens on basePort + i - 1; 0 = any free port */
  basePort: number
  logLevel: string
  onLog?: (node: string, line: string) => void
}

export interface DevnetNode {
  name: string
  paths: DataDirPaths
  process: NodeProcess
  token: string
}

/** node-1 carries every role (bootstrap, relay, admin, publisher); the others are members. */
export function devnetRoles (index: number): Role[] {
  return index === 1 ? ['bootstrap', 'relay', 'admin', 'publisher', 'member'] : ['member', 'publisher']
}

/**
 * Creates (or reuses) a dev CA and N enrolled nodes under `dir`, so running devnet again in the
 * same directory keeps every PeerId.
 */
export async function prepareDevnet (dir: string, count: number): Promise<DataDirPaths[]> {
  const caDir = join(dir, 'ca')
  if (!await exists(join(caDir, 'ca.key'))) {
    await mkdir(dir, { recursive: true })
    // a throw-away CA on this machine only: its key stays unencrypted so `npm start` needs no passphrase
    await initCa(caDir, { name: 'BKG devnet', days: 3650 })
  }
  const all: DataDirPaths[] = []
  for (let i = 1; i <= count; i++) {
    const paths = dataDirPaths(join(dir, `node-${i}`))
    if (!await exists(paths.cert)) await provisionNode(caDir, paths, { name: `node-${i}`, roles: devnetRoles(i), namespaces: ['default'] })
    all.push(paths)
  }
  return all
}

/**
 * What an operator does for a new node: enroll it, sign its CSR, hand it the CA certificate.
 * `passphrase` unlocks an encrypted CA key (the devnet's and the tests' CAs are unencrypted).
 */
export async function provisionNode (caDir: string, paths: DataDirPaths, init: { name: string, roles: Role[], namespaces: string[], days?: number, sans?: string[], passphrase?: Passphrase }): Promise<string> {
  const { csrPem, peerId } = await enrollNode(paths, init.name)
  const { certPem } = await signNodeCsr(caDir, csrPem, { roles: init.roles, namespaces: init.namespaces, days: init.days ?? 365, sans: init.sans, passphrase: init.passphrase })
  await writeFile(paths.cert, certPem)
  await copyFile(join(caDir, 'ca.crt'), paths.ca)
  return peerId
}

/** Starts the prepared nodes as separate processes: node-1 first, the others bootstrapping from it. */
export async function startDevnet (options: DevnetOptions): Promise<DevnetNode[]> {
  const all = await prepareDevnet(options.dir, options.nodes)
  const started: DevnetNode[] = []
  try {
    for (const [index, paths] of all.entries()) {
      const name = `node-${index + 1}`
      const apiPort = options.basePort === 0 ? 0 : options.basePort + index
      const args = ['--data', paths.dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', `127.0.0.1:${apiPort}`, '--log-level', options.logLevel]
      if (index > 0) args.push('--bootstrap', started[0].process.started.addrs.filter((addr) => !addr.includes('/p2p-circuit'))[0])
      const process = await spawnNode({ args, onLog: (line) => options.onLog?.(name, line) }).catch((err: unknown) => {
        throw err instanceof NodeStartError ? new NodeStartError(`${name} did not start: ${err.message}`, err.exitCode) : err
      })
      started.push({ name, paths, process, token: (await readFile(paths.apiToken, 'utf8')).trim() })
    }
  } catch (err) {
    await Promise.all(started.map(async (node) => await node.process.stop()))
    throw err
  }
  return started
}
