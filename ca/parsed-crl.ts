/** A CRL that was parsed (and, from verifyCrl, checked against the CA): what admission checks against. */
export interface ParsedCrl {
  number: bigint
  /** issuer common name */
  issuer: string
  thisUpdate: Date
  nextUpdate: Date | null
  /** normalised serial (see normalizeSerial) → revocation date */
  revoked: Map<string, Date>
  /** the CRL re-armoured as a single PEM block */
  pem: string
}
