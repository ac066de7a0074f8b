import { writeFile } from 'node:fs/promises'
import type { Command } from 'commander'
import {
  caExists, changeCaPassphrase, formatSubjectAltName, initCa, isCaKeyEncrypted, issueCrl, loadCa, parseNamespaces, parseRoles,
  parseSubjectAltNames, revokeCertificate, signNodeCsr
} from '../../../ca/index.ts'
import { splitList } from '../../config/index.ts'
import { CliError } from '../errors.ts'
import { positiveInt, readInput } from '../options.ts'
import {
  caPassphrase, newCaPassphrase, PASSPHRASE_ENV, passphraseFileOption, warnIfKeyUnencrypted, type PassphraseOptions
} from '../passphrase.ts'

/** Unlocks the CA key of `dir` with the passphrase options, asking only if the key is encrypted. */
async function unlockWith (options: PassphraseOptions, dir: string): Promise<{ passphrase: () => Promise<string> }> {
  await warnIfKeyUnencrypted(dir)
  return { passphrase: async () => await caPassphrase(options, dir) }
}

export function registerCaCommands (program: Command): void {
  const ca = program.command('ca').description('operator certificate authority: issue, revoke, publish CRLs')

  ca.command('init')
    .description('create a new operator CA (ca.crt, and ca.key encrypted under a passphrase, mode 0600)')
    .requiredOption('--out <dir>', 'directory for the CA files')
    .option('--name <operator>', 'operator name in the CA subject', 'BKG Operator')
    .option('--days <n>', 'validity in days', positiveInt, 3650)
    .addOption(passphraseFileOption())
    .option('--insecure-no-passphrase', 'write ca.key unencrypted (throw-away test CAs only)')
    .option('--force', 'replace an existing CA in --out; its files move to <out>/replaced-<time>/')
    .action(async (options: { out: string, name: string, days: number, force?: boolean, insecureNoPassphrase?: boolean } & PassphraseOptions) => {
      if (options.insecureNoPassphrase === true && options.passphraseFile != null) {
        throw new CliError('give either --passphrase-file or --insecure-no-passphrase, not both', 2)
      }
      // before asking for a passphrase that could not be used anyway (initCa checks again, under its lock)
      if (options.force !== true && await caExists(options.out)) {
        throw new CliError(`a CA already exists in ${options.out}; refusing to replace it (--force replaces it and moves the old files to ${options.out}/replaced-<time>/)`)
      }
      const passphrase = options.insecureNoPassphrase === true
        ? undefined
        : await newCaPassphrase({
          file: options.passphraseFile,
          envName: PASSPHRASE_ENV,
          missing: `the new CA key needs a passphrase: give --passphrase-file FILE or set ${PASSPHRASE_ENV} (stdin is not a terminal to ask on), or --insecure-no-passphrase for a throw-away test CA`
        }, options.out)
      const { replaced } = await initCa(options.out, { name: options.name, days: options.days, force: options.force === true, passphrase })
      if (replaced !== null) console.error(`bkg: the previous CA moved to ${replaced}; certificates it issued are no longer signed by this CA`)
      if (passphrase === undefined) console.error('bkg: warning: ca.key is NOT encrypted (--insecure-no-passphrase); use this CA for tests only')
      console.log(`CA created in ${options.out}: ca.crt (trust anchor, give it to every node) and ca.key (${passphrase === undefined ? 'unencrypted' : 'encrypted'}, keep it secret)`)
    })

  ca.command('sign')
    .description('issue a node certificate from its CSR (node.csr from `bkg init`)')
    .requiredOption('--ca <dir>', 'CA directory')
    .requiredOption('--csr <file>', 'the node\'s CSR')
    .requiredOption('--out <file>', 'where to write the certificate (PEM)')
    .option('--roles <list>', 'comma-separated roles: bootstrap, relay, publisher, admin, member', 'member')
    .option('--namespaces <list>', 'comma-separated namespaces the node may use', '')
    .option('--days <n>', 'validity in days', positiveInt, 365)
    .option('--san <list>', 'comma-separated names the node\'s HTTPS API is reached by: DNS:<name>, IP:<address>')
    .option('--no-loopback-san', 'do not add the default DNS:localhost, IP:127.0.0.1, IP:::1')
    .addOption(passphraseFileOption())
    .action(async (options: { ca: string, csr: string, out: string, roles: string, namespaces: string, days: number, san?: string, loopbackSan: boolean } & PassphraseOptions) => {
      // checked before the CSR is even read, so a typo costs nothing
      const sans = parseSubjectAltNames(options.san ?? '')
      const csrPem = await readInput(options.csr, 'CSR')
      const { certPem, cert } = await signNodeCsr(options.ca, csrPem, {
        roles: parseRoles(splitList(options.roles)),
        namespaces: parseNamespaces(splitList(options.namespaces)),
        days: options.days,
        sans: sans.map(formatSubjectAltName),
        loopbackSans: options.loopbackSan,
        ...await unlockWith(options, options.ca)
      })
      await writeFile(options.out, certPem)
      // a certificate never outlives its CA: say so when that cut the asked-for lifetime short
      const asked = Date.now() + options.days * 86_400_000
      if (cert.notAfter.getTime() < asked - 86_400_000) {
        console.error(`bkg: warning: the certificate ends ${cert.notAfter.toISOString()}, when the CA does, not after the ${options.days} days asked for; renew the CA to issue longer`)
      }
      console.log(`issued ${options.out}: ${cert.name} ${cert.peerId} roles=${cert.roles.join(',')} namespaces=${cert.namespaces.join(',') || '-'} san=${[...cert.dnsNames.map((n) => `DNS:${n}`), ...cert.ipAddresses.map((a) => `IP:${a}`)].join(',') || '-'} serial=${cert.serial} notAfter=${cert.notAfter.toISOString()}`)
    })

  ca.command('revoke')
    .description('revoke a node certificate (then publish a new CRL with `bkg ca crl` and `bkg crl publish`)')
    .requiredOption('--ca <dir>', 'CA directory')
    .option('--cert <file>', 'the certificate to revoke')
    .option('--serial <hex>', 'serial number of the certificate to revoke')
    .addOption(passphraseFileOption())
    .action(async (options: { ca: string, cert?: string, serial?: string } & PassphraseOptions) => {
      if ((options.cert == null) === (options.serial == null)) throw new CliError('give exactly one of --cert FILE or --serial HEX', 2)
      const unlock = await unlockWith(options, options.ca)
      const entry = options.cert != null
        ? await revokeCertificate(options.ca, { certPem: await readInput(options.cert, 'certificate') }, unlock)
        : await revokeCertificate(options.ca, { serial: options.serial! }, unlock)
      console.log(`revoked serial ${entry.serial} (${entry.name} ${entry.peerId}); now run: bkg ca crl --ca ${options.ca} --out crl.pem`)
    })

  ca.command('crl')
    .description('write a new signed CRL listing every revoked certificate')
    .requiredOption('--ca <dir>', 'CA directory')
    .requiredOption('--out <file>', 'where to write the CRL (PEM)')
    .option('--days <n>', 'days until the next update is due', positiveInt, 7)
    .addOption(passphraseFileOption())
    .action(async (options: { ca: string, out: string, days: number } & PassphraseOptions) => {
      const { crlPem, number } = await issueCrl(options.ca, { days: options.days, ...await unlockWith(options, options.ca) })
      await writeFile(options.out, crlPem)
      console.log(`wrote CRL number ${number} to ${options.out}; spread it with: bkg crl publish ${options.out} --data <admin node dir>`)
    })

  ca.command('passphrase')
    .description('encrypt ca.key under a new passphrase (also encrypts an unencrypted key)')
    .requiredOption('--ca <dir>', 'CA directory')
    .addOption(passphraseFileOption())
    .option('--new-passphrase-file <file>', 'file whose first line is the new passphrase (else $BKG_CA_NEW_PASSPHRASE, else a prompt on a terminal)')
    .action(async (options: { ca: string, newPassphraseFile?: string } & PassphraseOptions) => {
      // the current passphrase first (and checked), so a wrong one stops before the new one is typed
      const current = await isCaKeyEncrypted(options.ca) === true ? await caPassphrase(options, options.ca) : undefined
      await loadCa(options.ca, { passphrase: current })
      const newPassphrase = await newCaPassphrase({
        file: options.newPassphraseFile,
        envName: 'BKG_CA_NEW_PASSPHRASE',
        missing: 'the new passphrase is missing: give --new-passphrase-file FILE or set BKG_CA_NEW_PASSPHRASE (stdin is not a terminal to ask on)'
      }, options.ca)
      await changeCaPassphrase(options.ca, { passphrase: current, newPassphrase })
      console.log(`${options.ca}/ca.key is now encrypted under the new passphrase`)
    })
}
