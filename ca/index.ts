/**
 * Operator CA library: node CSRs, node certificates, CRLs and the CA directory.
 */
export { CaError, isCaError, type CaErrorCode } from './errors.ts'
export {
  BKG_ARC, OID_NAMESPACES, OID_PEER_KEY_PROOF, OID_ROLES, PEER_URI_PREFIX, CSR_PROOF_CONTEXT
} from './oids.ts'
export { ROLES, NAMESPACE_PATTERN, isRole, parseRoles, parseNamespaces, type Role } from './roles.ts'
export {
  createNodeCsr, verifyNodeCsr, csrProofData, validateNodeName, MAX_NODE_NAME_LENGTH,
  type CreateNodeCsrOptions, type NodeCsr, type VerifiedCsr
} from './csr.ts'
export {
  parseNodeCertificate, verifyNodeCertificate,
  type NodeCertificate, type VerifyNodeCertificateOptions
} from './certificate.ts'
export {
  createCrl, parseCrl, verifyCrl, isNewerCrl,
  type CreateCrlOptions, type RevokedEntry
} from './crl.ts'
export type { ParsedCrl } from './parsed-crl.ts'
export {
  initCa, loadCa, signNodeCsr, revokeCertificate, issueCrl, listCertificates, changeCaPassphrase, isCaKeyEncrypted, caExists,
  CA_CERT_FILE, CA_KEY_FILE, CA_INDEX_FILE, CA_CRLNUMBER_FILE,
  type InitCaOptions, type CaKeyOptions, type LoadedCa, type SignNodeCsrOptions, type RevokeTarget, type IndexEntry
} from './authority.ts'
export { CA_KEY_KDF, isEncryptedKeyPem, type Passphrase } from './key-file.ts'
export { normalizeSerial } from './x509.ts'
export {
  parseSubjectAltNames, formatSubjectAltName, LOOPBACK_SUBJECT_ALT_NAMES, MAX_SUBJECT_ALT_NAMES,
  type SubjectAltName
} from './san.ts'
