/**
 * Model packages (`.bkg` files, see docs/model-format.md): packing model files into a signed
 * package, reading and checking one, and verifying a signed manifest against the operator CA.
 * No libp2p and no node here: the CLI's `bkg model pack/verify` and the node's model store both
 * build on this folder, and a CLI command loads only what it needs.
 *
 * @example
 * import { packModel, openPackage, verifyEnvelope, verifyPackageContent } from '../model-packages/index.ts'
 *
 * const envelope = await packModel({ source: 'weights/', name: 'llama', version: '1.0.0', architecture: 'llama', licence: 'MIT', publisher, publisherCert, out: 'llama-1.0.0.bkg' })
 * const opened = await openPackage('llama-1.0.0.bkg')
 * verifyEnvelope(opened.envelope, { caPem, crl })      // signature, publisher certificate, CRL
 * await verifyPackageContent('llama-1.0.0.bkg', opened) // every file against its CID
 */
export { assertDigestMatches, digestContent, packageFileBytes, type ContentDigest } from './content-digest.ts'
export { packModel, type PackInit } from './pack.ts'
export { openPackage, verifyPackageContent, writePackage, type OpenedPackage } from './package-file.ts'
export { checkPublisherCertificate, signManifest, verifyEnvelope, type PublisherIdentity, type VerifyOptions } from './package-signing.ts'
