import type { Command } from 'commander'
import { configFromEnv, readConfigFile, resolveConfig, splitList } from '../../config/index.ts'
import type { NodeConfig } from '../../config/index.ts'
import { dataDirPaths, defaultDataDir } from '../../identity/index.ts'
import { createLogger } from '../../log/index.ts'
import { installProcessGuards } from '../../process-guards.ts'

interface StartFlags {
  data: string
  config?: string
  name?: string
  listen?: string
  announce?: string
  api?: string
  apiTls?: boolean
  apiInsecure?: boolean
  apiAdminMtls?: boolean
  bootstrap?: string
  bootstrapFile?: string
  upnp?: boolean
  relayReserve?: boolean
  logLevel?: string
  sync?: string
  syncChanges?: boolean
  psql?: boolean
}

export function registerStartCommand (program: Command): void {
  program.command('start')
    .description('run a node until SIGINT/SIGTERM (settings: defaults < config file < BKG_* env < flags)')
    .option('--data <dir>', 'node data directory', defaultDataDir())
    .option('--config <file>', 'JSON config file (default: <data>/config.json if present)')
    .option('--name <node>', 'node name shown to peers (default: the certificate\'s)')
    .option('--listen <multiaddrs>', 'comma-separated listen multiaddrs (default /ip4/0.0.0.0/tcp/4001)')
    .option('--announce <multiaddrs>', 'comma-separated addresses to advertise instead')
    .option('--api <host:port>', 'HTTP API address (default 127.0.0.1:7070); beyond loopback it is served over HTTPS')
    .option('--api-tls', 'serve the API over HTTPS with node.crt even on loopback')
    .option('--no-api-tls', 'never serve HTTPS (refused beyond loopback without --api-insecure)')
    .option('--api-insecure', 'allow plain HTTP on a non-loopback --api address (e.g. behind a TLS proxy)')
    .option('--api-admin-mtls', 'admin routes also need a TLS client certificate from the operator CA with the admin role')
    .option('--bootstrap <multiaddrs>', 'comma-separated bootstrap peers (/ip4/…/tcp/…/p2p/<PeerId>)')
    .option('--bootstrap-file <file>', 'bootstrap list file: one multiaddr per line')
    .option('--upnp', 'map the listen port on the router with UPnP')
    .option('--relay-reserve', 'hold a reservation on a relay peer so others can reach this node through it (behind NAT)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
    .option('--sync <postgres-url>', 'copy this node\'s events to a central PostgreSQL (schema bkg, migrations applied at start)')
    .option('--sync-changes', 'with --sync: also take in events inserted centrally (logical replication)')
    .option('--psql', 'let psql inspect the embedded database through a Unix socket in <data>/psql (node\'s OS user only)')
    .action(async (flags: StartFlags) => {
      const paths = dataDirPaths(flags.data)
      const config = resolveConfig(
        await readConfigFile(flags.config ?? paths.config, flags.config != null),
        configFromEnv(process.env),
        flagsToConfig(flags)
      )
      await runNode(paths.dir, config)
    })
}

function flagsToConfig (flags: StartFlags): Record<string, unknown> {
  return {
    name: flags.name,
    listen: flags.listen != null ? splitList(flags.listen) : undefined,
    announce: flags.announce != null ? splitList(flags.announce) : undefined,
    api: flags.api,
    // only the flags given, so they merge into a config file's apiTls instead of resetting it
    apiTls: definedOnly({ enabled: flags.apiTls, insecure: flags.apiInsecure, adminMtls: flags.apiAdminMtls }),
    bootstrap: flags.bootstrap != null ? splitList(flags.bootstrap) : undefined,
    bootstrapFile: flags.bootstrapFile,
    upnp: flags.upnp,
    relay: flags.relayReserve === true ? { reserve: true } : undefined,
    logLevel: flags.logLevel,
    sync: flags.sync != null || flags.syncChanges === true ? { url: flags.sync, changes: flags.syncChanges } : undefined,
    psql: flags.psql
  }
}

function definedOnly (values: Record<string, unknown>): Record<string, unknown> | undefined {
  const entries = Object.entries(values).filter(([, value]) => value !== undefined)
  return entries.length > 0 ? Object.fromEntries(entries) : undefined
}

async function runNode (dataDir: string, config: NodeConfig): Promise<void> {
  const log = await createLogger({ level: config.logLevel })
  // loaded here so that light commands (`bkg --help`, `bkg ca …`) do not pay for the libp2p stack
  const { createNode } = await import('../../create-node.ts')
  const node = await createNode({ dataDir, config, log })
  installProcessGuards(log, async () => await node.stop())
  await node.start()

  let stoppingSince = 0
  const shutdown = (signal: string): void => {
    if (stoppingSince > 0) {
      // Ctrl-C reaches a whole process group (a devnet parent forwards it too): only a repeat
      // that comes later is a person insisting
      if (Date.now() - stoppingSince < 1000) return
      log.warn(`${signal} again: exiting immediately`)
      process.exit(130)
    }
    stoppingSince = Date.now()
    log.info(`${signal}: shutting down`)
    const force = setTimeout(() => {
      log.error('shutdown took longer than 10 s; exiting')
      process.exit(1)
    }, 10_000)
    force.unref()
    node.stop().then(() => process.exit(0), (err: Error) => {
      log.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  }
  process.on('SIGINT', () => shutdown('SIGINT'))
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  // the first line on stdout is machine-readable: scripts wait for it, then may signal at once,
  // so it comes after the signal handlers (before them, a SIGTERM killed the node uncleanly)
  process.stdout.write(`${JSON.stringify({ event: 'started', peerId: node.peerId, api: node.url, addrs: node.host.getMultiaddrs().map(String) })}\n`)
}
