/**
 * The `[acme]` table of the config file: certificates from an ACME CA (Let's Encrypt) for the
 * listeners with `tls.acme = true`. Defaults come from `acme/AcmeOptions.ts`; `Options.ts`
 * maps the decoded table to the manager's options and `AcmeChecks.ts` checks it further.
 */
import { Schema } from "effect"
import * as AcmeOptionsModule from "../acme/AcmeOptions.ts"
import { duration, ListenAddress, NonEmpty, withDefault } from "./SchemaParts.ts"
import { Duration } from "./Units.ts"

const ad = AcmeOptionsModule.defaults

/** `[acme]`: certificates from an ACME CA (Let's Encrypt) for the listeners with `tls.acme = true`. */
export const Acme = Schema.Struct({
  /** `letsencrypt` (default), `letsencrypt-staging`, or a directory URL. */
  directory: withDefault(NonEmpty, "letsencrypt"),
  /** Contact for the CA's expiry and policy notices. */
  email: Schema.optionalKey(NonEmpty),
  /** Names to certify, one certificate each; empty: the host names of the listeners with tls.acme. */
  domains: withDefault(Schema.Array(NonEmpty), []),
  challenge: withDefault(Schema.Literals(["http-01", "tls-alpn-01"]), ad.challenge),
  /** Where the HTTP-01 responder listens while an order is open (port 80, or a port a proxy forwards 80 to). */
  http_listen: withDefault(ListenAddress, "0.0.0.0:80"),
  /** Where the TLS-ALPN-01 responder listens while an order is open (port 443, or a port forwarded from it). */
  tls_alpn_listen: withDefault(ListenAddress, "0.0.0.0:443"),
  key_type: withDefault(Schema.Literals(["ecdsa-p256", "rsa-2048"]), ad.keyType),
  /** Renew this long before expiry; default a third of the certificate's lifetime. */
  renew_before: Schema.optionalKey(Duration),
  /** PEM file of CA certificates to trust for the directory's HTTPS (a private CA; pebble in tests). */
  directory_ca: Schema.optionalKey(NonEmpty),
  /** First wait after a failed issuance, doubled per failure up to retry_max. */
  retry_base: duration(ad.retryBaseMs),
  retry_max: duration(ad.retryMaxMs)
})
