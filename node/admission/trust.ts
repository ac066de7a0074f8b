import { readFile } from 'node:fs/promises'
import {
  CaError, isNewerCrl, verifyCrl, verifyNodeCertificate,
  type NodeCertificate, type ParsedCrl
} from '../../ca/index.ts'
import { IdentityMissingError } from '../identity/index.ts'
import { writeFileAtomic } from '../../lib/fs.ts'

export interface TrustInit {
  caPem: string
  certPem: string
  crlPem?: string | null
  /** where an accepted CRL is persisted so a restart keeps honouring it */
  crlPath: string
  now?: () => Date
}

export type CrlOffer =
  | { accepted: true, crl: ParsedCrl }
  | { accepted: false, reason: 'stale' | 'untrusted', message: string }

/**
 * The node's trust anchor (operator CA), its own certificate and the newest CRL it has seen.
 * Every peer certificate is checked here.
 */
export class Trust {
  readonly caPem: string
  readonly certPem: string
  readonly own: NodeCertificate
  private currentCrl: ParsedCrl | null = null
  private readonly crlPath: string
  private readonly now: () => Date

  constructor (init: TrustInit) {
    this.caPem = init.caPem
    this.certPem = init.certPem
    this.crlPath = init.crlPath
    this.now = init.now ?? (() => new Date())
    if (init.crlPem != null) {
      this.currentCrl = verifyCrl(init.crlPem, init.caPem)
    }
    this.own = verifyNodeCertificate(init.certPem, { caPem: init.caPem, crl: this.currentCrl, now: this.now() })
  }

  static async load (paths: { caPath: string, certPath: string, crlPath: string }, now?: () => Date): Promise<Trust> {
    const [caPem, certPem, crlPem] = await Promise.all([
      readRequired(paths.caPath, 'the operator CA certificate (trust anchor)'),
      readRequired(paths.certPath, 'this node\'s certificate (have the operator sign node.csr with `bkg ca sign`)'),
      readOptional(paths.crlPath)
    ])
    return new Trust({ caPem, certPem, crlPem, crlPath: paths.crlPath, now })
  }

  get crl (): ParsedCrl | null {
    return this.currentCrl
  }

  /** Throws CaError when the peer's certificate must not be admitted. */
  verifyPeer (certPem: string, peerId: string): NodeCertificate {
    return verifyNodeCertificate(certPem, {
      caPem: this.caPem,
      crl: this.currentCrl,
      now: this.now(),
      expectedPeerId: peerId
    })
  }

  /** Whether a certificate we admitted earlier is still good (not expired, not revoked). */
  stillValid (cert: NodeCertificate): CaError | null {
    try {
      this.verifyPeer(cert.pem, cert.peerId)
      return null
    } catch (err) {
      if (err instanceof CaError) return err
      throw err
    }
  }

  /** Adopt a CRL if the CA signed it and it is newer than ours; persists it before returning. */
  async offerCrl (pem: string): Promise<CrlOffer> {
    let candidate: ParsedCrl
    try {
      candidate = verifyCrl(pem, this.caPem)
    } catch (err) {
      if (err instanceof CaError) return { accepted: false, reason: 'untrusted', message: err.message }
      throw err
    }
    if (!isNewerCrl(candidate, this.currentCrl)) {
      return {
        accepted: false,
        reason: 'stale',
        message: `CRL number ${candidate.number} is not newer than the current ${this.currentCrl?.number ?? 'none'}`
      }
    }
    await writeFileAtomic(this.crlPath, candidate.pem)
    this.currentCrl = candidate
    return { accepted: true, crl: candidate }
  }
}

/** null only when the file does not exist: an unreadable CRL must not start a node that ignores it */
async function readOptional (path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    // no CRL yet: the operator has revoked nothing
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}

async function readRequired (path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      // a node not yet (fully) enrolled: the operator's next step, not a crash
      throw new IdentityMissingError(`missing ${path}: ${what}`)
    }
    throw err
  }
}
