import { access, readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import cliProgress from 'cli-progress'
import type { Command } from 'commander'
import { parseNodeCertificate, verifyCrl, type ParsedCrl } from '../../../ca/index.ts'
import { PackageError, totalSize } from '../../../protocols/model-package.ts'
import { dataDirPaths, defaultDataDir } from '../../identity/index.ts'
import { openPackage, packModel, verifyEnvelope, verifyPackageContent } from '../../model-packages/index.ts'
import { CliError, EXIT } from '../errors.ts'
import { callNode, resolveTarget, uploadToNode } from '../node-client.ts'
import { positiveInt, readInput } from '../options.ts'

/** publisher certificate refusals, named with the code nodes answer a publish with */
const REFUSED_PUBLISHER = new Set(['publisher_unknown', 'publisher_expired', 'publisher_not_yet_valid', 'publisher_revoked'])

/** how often `bkg model pull` redraws its progress bar */
const PROGRESS_INTERVAL_MS = 200

export function registerModelCommands (program: Command): void {
  const model = program.command('model').description('signed model packages (.bkg)')

  model.command('pack')
    .description('write a signed .bkg package from a file or directory (needs a certificate with the publisher role)')
    .argument('<path>', 'model file or directory')
    .requiredOption('--name <name>', 'model name: lowercase letters, digits, . _ -')
    .requiredOption('--version <semver>', 'model version, e.g. 1.0.0')
    .requiredOption('--out <file>', 'where to write the package (FILE.bkg)')
    .option('--licence <spdx>', 'SPDX licence id or expression', 'NOASSERTION')
    .option('--architecture <arch>', 'model architecture, e.g. llama', 'unspecified')
    .option('--chunk-size <bytes>', 'UnixFS chunk size (64 KiB-4 MiB)', positiveInt, 1024 * 1024)
    .option('--data <dir>', 'data dir of the publishing node (its certificate and key sign)', defaultDataDir())
    .option('--ca <file>', 'operator CA certificate to check the publisher certificate against (instead of <data>/ca.crt)')
    .option('--crl <file>', 'CRL to honour (instead of <data>/crl.pem, if present)')
    .action(async (path: string, options: { name: string, version: string, out: string, licence: string, architecture: string, chunkSize: number, data: string, ca?: string, crl?: string }) => {
      const paths = dataDirPaths(options.data)
      const certPem = await readInput(paths.cert, 'the node certificate')
      const keyPem = await readInput(paths.x509Key, 'the node\'s X.509 key')
      // the checks a node runs at publish, so a package it would refuse is never signed
      // no ca.crt in the data dir: the CA checks are skipped here (the node still runs them at publish)
      const caPem = options.ca != null ? await readInput(options.ca, 'the CA certificate') : await readFile(paths.ca, 'utf8').catch(() => undefined)
      if (caPem === undefined && options.crl != null) throw new CliError(`checking the CRL ${options.crl} needs the CA certificate: pass --ca FILE or put ca.crt in ${paths.dir}`, 2)
      const crl = caPem === undefined ? null : await loadCrl(options.crl ?? paths.crl, options.crl != null, caPem)
      const started = performance.now()
      const envelope = await packModel({
        source: resolve(path),
        name: options.name,
        version: options.version,
        architecture: options.architecture,
        licence: options.licence,
        chunkSize: options.chunkSize,
        publisher: { certPem, keyPem },
        publisherCert: parseNodeCertificate(certPem),
        out: resolve(options.out),
        caPem,
        crl
      }).catch((err: unknown) => {
        if (err instanceof PackageError && REFUSED_PUBLISHER.has(err.code)) {
          throw new CliError(`refusing to sign (${err.code}, as nodes would refuse the package): ${err.message}`)
        }
        throw err
      })
      const { manifest } = envelope
      console.error(`signed by ${manifest.publisher.name} (${manifest.publisher.peerId}); ${manifest.files.length} file(s), ${totalSize(manifest)} bytes, ${Math.round(performance.now() - started)} ms`)
      console.log(`${manifest.name}@${manifest.version} → ${options.out}`)
    })

  model.command('publish')
    .description('add a .bkg package to a running node: verified, stored, announced in the DHT, manifest gossiped')
    .argument('<file>', 'the package')
    .option('--data <dir>', 'data dir of the running node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of --data')
    .option('--token <token>', 'admin token for --api')
    .action(async (file: string, options: { data: string, api?: string, token?: string }) => {
      await access(file).catch(() => { throw new CliError(`cannot read package ${file}: no such file`) })
      const target = await resolveTarget(options, defaultDataDir())
      const result = await uploadToNode<{ name: string, version: string, totalSize: number, added: boolean, announced: number, files: unknown[], recipients: number }>(target, 'POST', '/api/v1/models', resolve(file))
      console.error(`${result.added ? 'added' : 'already held'}; ${result.announced}/${result.files.length} provider record(s) in the DHT; manifest sent to ${result.recipients} peer(s)`)
      console.log(`${result.name}@${result.version} published (${result.totalSize} bytes)`)
    })

  model.command('pull')
    .description('fetch a model from the peers that hold it into a running node (exit 0 only once it is verified and stored)')
    .argument('<model>', 'NAME or NAME@VERSION')
    .option('--data <dir>', 'data dir of the running node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of --data')
    .option('--token <token>', 'admin token for --api')
    .action(async (ref: string, options: { data: string, api?: string, token?: string }) => {
      const { name, version } = parseModelRef(ref, false)
      const target = await resolveTarget(options, defaultDataDir())
      let job = await callNode<PullJobView>(target, 'POST', '/api/v1/models/pulls', version == null ? { name } : { name, version })
      const bar = new PullProgressView(`${name}@${version ?? 'latest'}`)
      // The node pulls; this command only watches. Ctrl-C stops the watching, not the pull (the
      // API has no cancel: a pull stops with its node and resumes from disk), so say so.
      const interrupted = (): void => {
        bar.stop(job)
        const resolved = job.version ?? version
        const model = resolved == null ? name : `${name}@${resolved}`
        const where = options.api != null ? `--api ${target.url}` : `--data ${dataDirPaths(options.data).dir}`
        console.error(`bkg: interrupted: the pull of ${model} goes on in the node (job ${job.id}); follow it again with \`bkg model pull ${model} ${where}\` or GET ${target.url}/api/v1/models/pulls/${job.id}; it stops only with the node, and resumes from what is on disk when pulled again`)
        process.exit(EXIT.interrupted)
      }
      process.once('SIGINT', interrupted)
      try {
        while (job.finishedAt == null) {
          bar.update(job)
          // a long poll: back at once when the pull finishes, else in time for the next frame
          job = await callNode<PullJobView>(target, 'GET', `/api/v1/models/pulls/${job.id}?wait=${PROGRESS_INTERVAL_MS}`)
        }
      } finally {
        process.removeListener('SIGINT', interrupted)
      }
      bar.stop(job)
      if (job.state !== 'done') throw new CliError(`pull failed (${job.error?.code ?? 'unknown'}): ${job.error?.message ?? ''}`)
      console.log(`${job.name}@${job.version} pulled and verified (${job.totalBytes} bytes)`)
    })

  model.command('ls')
    .description('list the models a running node holds')
    .option('--data <dir>', 'data dir of the running node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of --data')
    .option('--token <token>', 'token for --api')
    .option('--json', 'print JSON')
    .action(async (options: { data: string, api?: string, token?: string, json?: boolean }) => {
      const target = await resolveTarget(options, defaultDataDir())
      const models = await callNode<Array<{ name: string, version: string, totalSize: number, files: unknown[], publisher: { name: string }, licence: string }>>(target, 'GET', '/api/v1/models')
      if (options.json === true) {
        console.log(JSON.stringify(models, null, 2))
        return
      }
      if (models.length === 0) console.error('no models held')
      for (const m of models) console.log(`${`${m.name}@${m.version}`.padEnd(32)} ${String(m.totalSize).padStart(14)} bytes  ${m.files.length} file(s)  ${m.licence}  by ${m.publisher.name}`)
    })

  model.command('rm')
    .description('remove a held model from a running node')
    .argument('<model>', 'NAME@VERSION')
    .option('--data <dir>', 'data dir of the running node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of --data')
    .option('--token <token>', 'admin token for --api')
    .action(async (ref: string, options: { data: string, api?: string, token?: string }) => {
      const { name, version } = parseModelRef(ref, true)
      const target = await resolveTarget(options, defaultDataDir())
      await callNode(target, 'DELETE', `/api/v1/models/${encodeURIComponent(name)}/${encodeURIComponent(version)}`)
      console.log(`removed ${name}@${version}`)
    })

  model.command('verify')
    .description('check a .bkg package: publisher certificate, signature and every file\'s size, sha256 and CID (exit 0 only when it verifies)')
    .argument('<file>', 'the package')
    .option('--data <dir>', 'take the CA certificate and CRL from this node data dir', defaultDataDir())
    .option('--ca <file>', 'operator CA certificate (instead of <data>/ca.crt)')
    .option('--crl <file>', 'CRL to honour (instead of <data>/crl.pem, if present)')
    .option('--json', 'print the verified manifest as JSON')
    .action(async (file: string, options: { data: string, ca?: string, crl?: string, json?: boolean }) => {
      const paths = dataDirPaths(options.data)
      const caPem = await readInput(options.ca ?? paths.ca, 'the CA certificate (pass --ca FILE or --data DIR)')
      const crl = await loadCrl(options.crl ?? paths.crl, options.crl != null, caPem)
      const opened = await openPackage(resolve(file))
      const { manifest, publisher } = verifyEnvelope(opened.envelope, { caPem, crl })
      await verifyPackageContent(resolve(file), opened)
      if (options.json === true) console.log(JSON.stringify(manifest, null, 2))
      else console.log(`verified ${manifest.name}@${manifest.version}: ${manifest.files.length} file(s), ${totalSize(manifest)} bytes, signed by ${publisher.name} (${publisher.peerId})`)
    })
}

interface PullJobView {
  id: string
  state: string
  name: string
  version: string | null
  totalBytes: number
  bytes: number
  peers: string[]
  error: { code: string, message: string } | null
  finishedAt: string | null
}

/** A progress bar on a terminal (bytes, rate, ETA, peers); one line per state change otherwise. */
class PullProgressView {
  private readonly bar: cliProgress.SingleBar | null
  private started = false
  private lastState = ''
  private readonly label: string
  private readonly startedAt = Date.now()

  constructor (label: string) {
    this.label = label
    this.bar = process.stderr.isTTY === true
      ? new cliProgress.SingleBar({
        stream: process.stderr,
        format: `${label} [{bar}] {percentage}% | {value}/{total} | {rate} | ETA {eta_formatted} | {peers} peer(s) | {state}`,
        formatValue: (value, _options, type) => (type === 'value' || type === 'total') ? formatBytes(value) : String(value)
      }, cliProgress.Presets.shades_classic)
      : null
  }

  update (job: PullJobView): void {
    if (this.bar == null) {
      if (job.state !== this.lastState) console.error(`${this.label}: ${job.state}${job.totalBytes > 0 ? ` (${formatBytes(job.totalBytes)} from ${job.peers.length} peer(s))` : ''}`)
      this.lastState = job.state
      return
    }
    const rate = `${formatBytes(job.bytes / Math.max(0.001, (Date.now() - this.startedAt) / 1000))}/s`
    if (!this.started && job.totalBytes > 0) {
      this.bar.start(job.totalBytes, job.bytes, { rate, peers: job.peers.length, state: job.state })
      this.started = true
    } else if (this.started) {
      this.bar.update(job.bytes, { rate, peers: job.peers.length, state: job.state })
    }
  }

  stop (job: PullJobView): void {
    this.update(job)
    if (this.started) this.bar?.stop()
  }
}

function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = n
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

/** NAME@VERSION, or NAME alone where the version may be left to the node (the newest). */
function parseModelRef (ref: string, versionRequired: true): { name: string, version: string }
function parseModelRef (ref: string, versionRequired: false): { name: string, version?: string }
function parseModelRef (ref: string, versionRequired: boolean): { name: string, version?: string } {
  const at = ref.lastIndexOf('@')
  if (at === -1 && !versionRequired && ref.length > 0) return { name: ref }
  if (at <= 0 || at === ref.length - 1) throw new CliError(`"${ref}" is not ${versionRequired ? 'NAME@VERSION' : 'NAME or NAME@VERSION'}`, 2)
  return { name: ref.slice(0, at), version: ref.slice(at + 1) }
}

async function loadCrl (path: string, required: boolean, caPem: string): Promise<ParsedCrl | null> {
  let pem: string
  try {
    pem = await readFile(path, 'utf8')
  } catch {
    if (required) throw new CliError(`cannot read CRL ${path}`)
    return null
  }
  return verifyCrl(pem, caPem)
}
