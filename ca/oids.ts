/**
 * Object identifiers used by BKG certificates, CSRs and CRLs.
 *
 * BKG's private extensions live under a UUID-derived arc (ITU-T X.667,
 * `2.25.<uuid as integer>`), which needs no registration.
 */

export const BKG_ARC = '2.25.156249825839868478141005544995822954753'

/** CSR extension (inside extensionRequest): OCTET STRING with the Ed25519 proof of possession of the libp2p key. */
export const OID_PEER_KEY_PROOF = `${BKG_ARC}.1`
/** Certificate extension, non-critical: UTF8String, comma-separated roles. */
export const OID_ROLES = `${BKG_ARC}.2`
/** Certificate extension, non-critical: UTF8String, comma-separated namespaces. */
export const OID_NAMESPACES = `${BKG_ARC}.3`

// standard OIDs used when building ASN.1 by hand
export const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11'
export const OID_CRL_NUMBER = '2.5.29.20'
export const OID_AUTHORITY_KEY_IDENTIFIER = '2.5.29.35'
export const OID_SUBJECT_KEY_IDENTIFIER = '2.5.29.14'
export const OID_SUBJECT_ALT_NAME = '2.5.29.17'
export const OID_BASIC_CONSTRAINTS = '2.5.29.19'
export const OID_COMMON_NAME = '2.5.4.3'

/** URI SAN prefix binding a certificate to a libp2p PeerId. */
export const PEER_URI_PREFIX = 'bkg:peer:'

/** Domain-separation prefix of the CSR proof of possession. */
export const CSR_PROOF_CONTEXT = 'bkg-csr-proof-v1\n'
