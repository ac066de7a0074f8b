import { Command, CommanderError } from 'commander'
import { VERSION } from '../version.ts'
import { registerCaCommands } from './commands/ca.ts'
import { registerCrlCommands } from './commands/crl.ts'
import { registerDevnetCommand } from './commands/devnet.ts'
import { registerInitCommand } from './commands/init.ts'
import { registerLlmCommands } from './commands/llm.ts'
import { registerMcpCommand } from './commands/mcp.ts'
import { registerModelCommands } from './commands/model.ts'
import { registerSandboxCommands } from './commands/sandbox.ts'
import { registerStartCommand } from './commands/start.ts'
import { registerStorageCommands } from './commands/storage.ts'
import { registerTokenCommands } from './commands/token.ts'
import { CliError, EXIT, exitCodeFor } from './errors.ts'
import { BkgError } from '../../lib/bkg-error.ts'

const program = new Command('bkg')
  .description('BKG mesh node: operator CA, certified peers on a private Kademlia DHT')
  .version(VERSION)
  // root options only before the subcommand: `bkg model pack … --version 1.0.0` is the model's version
  .enablePositionalOptions()
  // commander's own messages ("error: …" plus a help hint on a second line) are reported below in
  // the one-line `bkg: …` form every other failure uses
  .configureOutput({ outputError: () => {} })
  .exitOverride()

registerCaCommands(program)
registerInitCommand(program)
registerStartCommand(program)
registerTokenCommands(program)
registerCrlCommands(program)
registerModelCommands(program)
registerStorageCommands(program)
registerSandboxCommands(program)
registerLlmCommands(program)
registerMcpCommand(program)
registerDevnetCommand(program)

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CommanderError) {
    // help and version were printed on purpose; `bkg ca` without a subcommand printed its help
    if (['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(err.code)) process.exit(err.exitCode)
    const command = ['bkg', ...commandPath(process.argv.slice(2))].join(' ')
    console.error(`bkg: ${err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')} (see \`${command} --help\`)`)
    process.exit(EXIT.usage)
  }
  // a BkgError is a condition BKG names (refusal, bad input, busy port); anything else is a bug
  const known = err instanceof CliError || err instanceof BkgError
  console.error(`bkg: ${known ? '' : 'unexpected error: '}${err instanceof Error ? err.message : String(err)}`)
  if (!known && process.env.BKG_DEBUG != null) console.error(err)
  process.exit(exitCodeFor(err))
}

/** The subcommand names at the start of argv (`ca sign`), for the usage hint. */
function commandPath (args: string[]): string[] {
  const names: string[] = []
  let command: Command = program
  for (const arg of args) {
    const sub = command.commands.find((candidate) => candidate.name() === arg || candidate.aliases().includes(arg))
    if (sub == null) break
    names.push(sub.name())
    command = sub
  }
  return names
}
