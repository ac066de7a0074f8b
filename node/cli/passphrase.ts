/**
 * Where the CLI gets the operator CA key's passphrase, in this order: `--passphrase-file FILE`
 * (its first line, as `openssl -passin file:` reads it), the environment variable
 * BKG_CA_PASSPHRASE, a prompt without echo when stdin is a terminal. Otherwise the command stops
 * and says which of these to use: a CA key is never written unencrypted by accident.
 */
import { readFile } from 'node:fs/promises'
import { Option } from 'commander'
import { isCaKeyEncrypted } from '../../ca/index.ts'
import { CliError } from './errors.ts'

export const PASSPHRASE_ENV = 'BKG_CA_PASSPHRASE'
/** new passphrases only: a short one adds little over the scrypt work factor */
const MIN_NEW_PASSPHRASE = 8

export interface PassphraseOptions {
  passphraseFile?: string
}

/** `--passphrase-file`, for every command that unlocks the CA key. */
export function passphraseFileOption (): Option {
  return new Option('--passphrase-file <file>', `file whose first line is the CA key passphrase (else $${PASSPHRASE_ENV}, else a prompt on a terminal)`)
}

async function readPassphraseFile (path: string): Promise<string> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new CliError(`cannot read the passphrase file ${path}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`)
  }
  const line = text.split(/\r?\n/, 1)[0]
  if (line === '') throw new CliError(`the passphrase file ${path} is empty (its first line is the passphrase)`)
  return line
}

/** Reads one line from the terminal without echoing it; Ctrl-C cancels the command. */
async function promptHidden (question: string): Promise<string> {
  const input = process.stdin
  // echo off before the prompt shows: whatever is typed after seeing it is never echoed
  input.setRawMode(true)
  process.stderr.write(question)
  input.setEncoding('utf8')
  input.resume()
  return await new Promise<string>((resolve, reject) => {
    let value = ''
    const finish = (): void => {
      input.off('data', onData)
      input.setRawMode(false)
      input.pause()
      process.stderr.write('\n')
    }
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') {
          finish()
          resolve(value)
          return
        }
        if (ch === '\u0003' || (ch === '\u0004' && value === '')) { // Ctrl-C, or Ctrl-D on an empty line
          finish()
          reject(new CliError('cancelled: no passphrase entered', 130))
          return
        }
        if (ch === '\u007f' || ch === '\b') value = Array.from(value).slice(0, -1).join('')
        else if (ch === '\u0015') value = '' // Ctrl-U clears the line, as in a shell
        else if (ch >= ' ') value += ch
      }
    }
    input.on('data', onData)
  })
}

function fromEnvironment (): string | undefined {
  const value = process.env[PASSPHRASE_ENV]
  return value === undefined || value === '' ? undefined : value
}

/** The passphrase that unlocks an existing CA key; asked for only when the key is encrypted. */
export async function caPassphrase (options: PassphraseOptions, caDir: string): Promise<string> {
  if (options.passphraseFile != null) return await readPassphraseFile(options.passphraseFile)
  const env = fromEnvironment()
  if (env !== undefined) return env
  if (process.stdin.isTTY !== true) throw new CliError(`the CA key in ${caDir} is encrypted: give --passphrase-file FILE or set ${PASSPHRASE_ENV} (stdin is not a terminal to ask on)`, 2)
  return await promptHidden(`Passphrase for the CA key in ${caDir}: `)
}

/**
 * A new passphrase (for `ca init` and `ca passphrase`) from `file`, else the environment variable
 * `envName`, else typed twice on a terminal; `missing` is the message when there is none of these.
 */
export async function newCaPassphrase (source: { file?: string, envName: string, missing: string }, caDir: string): Promise<string> {
  let value: string
  const env = process.env[source.envName]
  if (source.file != null) {
    value = await readPassphraseFile(source.file)
  } else if (env !== undefined && env !== '') {
    value = env
  } else if (process.stdin.isTTY === true) {
    value = await promptHidden(`New passphrase for the CA key in ${caDir}: `)
    if (value.length >= MIN_NEW_PASSPHRASE) {
      const again = await promptHidden('The same passphrase again: ')
      if (again !== value) throw new CliError('the two passphrases differ; nothing was written')
    }
  } else {
    throw new CliError(source.missing, 2)
  }
  if (value.length < MIN_NEW_PASSPHRASE) {
    throw new CliError(`the CA key passphrase must have at least ${MIN_NEW_PASSPHRASE} characters; nothing was written`, 2)
  }
  return value
}

/** Prints the warning about an unencrypted CA key (one line on stderr), if it is one. */
export async function warnIfKeyUnencrypted (caDir: string): Promise<void> {
  if (await isCaKeyEncrypted(caDir) === false) {
    console.error(`bkg: warning: the CA key ${caDir}/ca.key is not encrypted; encrypt it with: bkg ca passphrase --ca ${caDir}`)
  }
}
