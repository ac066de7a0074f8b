import { writeFile } from 'node:fs/promises'
import type { Command } from 'commander'
import {
  formatSubjectAltName, initCa, issueCrl, parseNamespaces, parseRoles, parseSubjectAltNames, revokeCertificate, signNodeCsr
} from '../../../ca/index.ts'
import { splitList } from '../../config/load.ts'
import { CliError } from '../errors.ts'
import { positiveInt, readInput } from '../options.ts'

export function registerCaCommands (program: Command): void {
  const ca = program.command('ca').description('operator certificate authority: issue, revoke, publish CRLs')

  ca.command('init')
    .description('create a new operator CA (ca.crt, ca.key with mode 0600)')
    .requiredOption('--out <dir>', 'directory for the CA files')
    .option('--name <operator>', 'operator name in the CA subject', 'BKG Operator')
    .option('--days <n>', 'validity in days', positiveInt, 3650)
    .action(async (options: { out: string, name: string, days: number }) => {
      await initCa(options.out, { name: options.name, days: options.days })
      console.log(`CA created in ${options.out}: ca.crt (trust anchor, give it to every node) and ca.key (keep it secret)`)
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
    .action(async (options: { ca: string, csr: string, out: string, roles: string, namespaces: string, days: number, san?: string, loopbackSan: boolean }) => {
      // checked before the CSR is even read, so a typo costs nothing
      const sans = parseSubjectAltNames(options.san ?? '')
      const csrPem = await readInput(options.csr, 'CSR')
      const { certPem, cert } = await signNodeCsr(options.ca, csrPem, {
        roles: parseRoles(splitList(options.roles)),
        namespaces: parseNamespaces(splitList(options.namespaces)),
        days: options.days,
        sans: sans.map(formatSubjectAltName),
        loopbackSans: options.loopbackSan
      })
      await writeFile(options.out, certPem)
      console.log(`issued ${options.out}: ${cert.name} ${cert.peerId} roles=${cert.roles.join(',')} namespaces=${cert.namespaces.join(',') || '-'} san=${[...cert.dnsNames.map((n) => `DNS:${n}`), ...cert.ipAddresses.map((a) => `IP:${a}`)].join(',') || '-'} serial=${cert.serial} notAfter=${cert.notAfter.toISOString()}`)
    })

  ca.command('revoke')
    .description('revoke a node certificate (then publish a new CRL with `bkg ca crl` and `bkg crl publish`)')
    .requiredOption('--ca <dir>', 'CA directory')
    .option('--cert <file>', 'the certificate to revoke')
    .option('--serial <hex>', 'serial number of the certificate to revoke')
    .action(async (options: { ca: string, cert?: string, serial?: string }) => {
      if ((options.cert == null) === (options.serial == null)) throw new CliError('give exactly one of --cert FILE or --serial HEX', 2)
      const entry = options.cert != null
        ? await revokeCertificate(options.ca, { certPem: await readInput(options.cert, 'certificate') })
        : await revokeCertificate(options.ca, { serial: options.serial! })
      console.log(`revoked serial ${entry.serial} (${entry.name} ${entry.peerId}); now run: bkg ca crl --ca ${options.ca} --out crl.pem`)
    })

  ca.command('crl')
    .description('write a new signed CRL listing every revoked certificate')
    .requiredOption('--ca <dir>', 'CA directory')
    .requiredOption('--out <file>', 'where to write the CRL (PEM)')
    .option('--days <n>', 'days until the next update is due', positiveInt, 7)
    .action(async (options: { ca: string, out: string, days: number }) => {
      const { crlPem, number } = await issueCrl(options.ca, { days: options.days })
      await writeFile(options.out, crlPem)
      console.log(`wrote CRL number ${number} to ${options.out}; spread it with: bkg crl publish ${options.out} --data <admin node dir>`)
    })
}
