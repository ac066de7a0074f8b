/** how often admitted peers' certificates are re-checked for expiry while connected (config: admission.recheckIntervalMs) */
export const RECHECK_INTERVAL_MS = 60_000
/** A revoked peer stays out until a newer CRL no longer lists it: the denial lasts a century. */
export const REVOCATION_DENIAL_MS = 100 * 365 * 24 * 3600_000
/** the denial code of a peer a CRL revokes; a newer CRL lifts these before applying its own */
export const REVOKED = 'cert_revoked'
