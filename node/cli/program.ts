import { Command, CommanderError } from 'commander'
import { CaError } from '../../ca/index.ts'
import { ConfigError } from '../config/load.ts'
import { VERSION } from '../version.ts'
import { registerCaCommands } from './commands/ca.ts'
import { registerCrlCommands } from './commands/crl.ts'
import { registerDevnetCommand } from './commands/devnet.ts'
import { registerInitCommand } from './commands/init.ts'
import { registerModelCommands } from './commands/model.ts'
import { registerStartCommand } from './commands/start.ts'
import { registerStorageCommands } from './commands/storage.ts'
import { registerTokenCommands } from './commands/token.ts'
import { CliError } from './errors.ts'

const program = new Command('bkg')
  .description('BKG mesh node: operator CA, certified peers on a private Kademlia DHT')
  .version(VERSION)
  // root options only before the subcommand: `bkg model pack … --version 1.0.0` is the model's version
  .enablePositionalOptions()
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride()

registerCaCommands(program)
registerInitCommand(program)
registerStartCommand(program)
registerTokenCommands(program)
registerCrlCommands(program)
registerModelCommands(program)
registerStorageCommands(program)
registerDevnetCommand(program)

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CommanderError) {
    // commander already printed help or the usage error
    process.exit(err.exitCode)
  }
  const known = err instanceof CliError || err instanceof CaError || err instanceof ConfigError ||
    (err instanceof Error && 'code' in err && typeof (err as { code: unknown }).code === 'string' && err.constructor !== Error)
  console.error(`bkg: ${known ? '' : 'unexpected error: '}${err instanceof Error ? err.message : String(err)}`)
  if (!known && process.env.BKG_DEBUG != null) console.error(err)
  process.exit(err instanceof CliError ? err.exitCode : 1)
}
