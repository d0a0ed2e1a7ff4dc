/**
 * What the ACME certificate manager is told: which CA (its directory URL), who we are to it (an
 * e-mail for expiry notices), which names to certify, how to prove control of them (HTTP-01 on
 * `httpListen`, or TLS-ALPN-01 on `tlsAlpnListen`), the key type of the certificates, and when
 * to renew. Defaults follow Let's Encrypt's own advice: ECDSA P-256 keys, renewal once two
 * thirds of the lifetime have passed, and retries spaced widely enough that a failing
 * validation stays under its limit of 5 failures per name per hour.
 */

export type ChallengeType = "http-01" | "tls-alpn-01"
export type KeyType = "ecdsa-p256" | "rsa-2048"

/** Named directories; anything else is a URL. */
export const directories = {
  "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
  "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory"
} as const

export type DirectoryName = keyof typeof directories

export interface ListenAddress {
  readonly host: string
  readonly port: number
}

export interface AcmeOptions {
  /** The CA's directory URL (`directories` has the named ones). */
  readonly directory: string
  /** Contact for the account (the CA's expiry and policy notices). */
  readonly email?: string | undefined
  /** The names to certify, one certificate each; the first is what a client without SNI gets. */
  readonly domains: ReadonlyArray<string>
  readonly challenge: ChallengeType
  /** Where the HTTP-01 responder listens while an order is open (port 80, or one a proxy forwards from it). */
  readonly httpListen: ListenAddress
  /** Where the TLS-ALPN-01 responder listens while an order is open (port 443, or one forwarded from it). */
  readonly tlsAlpnListen: ListenAddress
  readonly keyType: KeyType
  /** Renew this long before expiry; undefined: when a third of the certificate's lifetime is left. */
  readonly renewBeforeMs?: number | undefined
  /**
   * PEM file of extra CA certificates to trust for the directory's own HTTPS (a private ACME
   * server such as step-ca, or pebble in tests). The system's roots stay trusted.
   */
  readonly directoryCaFile?: string | undefined
  /** First wait after a failed issuance; doubled per failure up to `retryMaxMs`. */
  readonly retryBaseMs: number
  readonly retryMaxMs: number
  /** How often the renewal loop looks at the certificates even when none is due (it also wakes when one is). */
  readonly checkIntervalMs: number
}

export const defaults = {
  directory: directories.letsencrypt,
  challenge: "http-01" as ChallengeType,
  httpListen: { host: "0.0.0.0", port: 80 },
  tlsAlpnListen: { host: "0.0.0.0", port: 443 },
  keyType: "ecdsa-p256" as KeyType,
  retryBaseMs: 5 * 60_000,
  retryMaxMs: 6 * 60 * 60_000,
  checkIntervalMs: 12 * 60 * 60_000
}

/** `directory` as written (a name or a URL) to the URL. */
export const directoryUrl = (directory: string): string =>
  directory in directories ? directories[directory as DirectoryName] : directory

/**
 * When a certificate valid from `notBefore` to `notAfter` (ms) is due for renewal. The window is
 * at most half the lifetime: a `renew_before` as long as the lifetime would make every new
 * certificate due at once, and the CA's limit on duplicate certificates (Let's Encrypt: 5 a
 * week) would soon refuse them all.
 */
export const renewAt = (options: Pick<AcmeOptions, "renewBeforeMs">, notBefore: number, notAfter: number): number => {
  const lifetime = notAfter - notBefore
  return notAfter - Math.min(options.renewBeforeMs ?? Math.floor(lifetime / 3), Math.floor(lifetime / 2))
}
