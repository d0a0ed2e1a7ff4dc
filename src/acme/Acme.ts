/**
 * ACME certificates for a host app: the options of `IncomingOptions.acme`, the `CertManager`
 * service of `Incoming.layer` (status of each managed name, `renew` on demand) and the error a
 * failed issuance reports. docs/acme.md describes the whole feature.
 */
export { AcmeError, type AcmeErrorReason } from "./AcmeError.ts"
export { type AcmeOptions, type ChallengeType, defaults, directories, type KeyType } from "./AcmeOptions.ts"
export { CertManager, type CertStatus } from "./CertManager.ts"
